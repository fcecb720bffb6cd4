"""Settings of ``prefloop judge`` (the ``[judge]`` table of a TOML config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class JudgeConfig:
    """Held-out evaluation: policy vs reference on prompts it never trained on, judged by one or more judges.

    ``policy``/``reference`` are local models (a folder, a ``.gguf``, ``smollm2``; ``local:`` prefix optional).
    ``judges`` are client specs (``ollama:llama3.1:8b``, ``openai:MODEL@URL``, ``local:smollm2``); the first is
    the headline judge. ``prompts`` is a prompts file (Alpaca/JSONL/text) or a preference-pairs file whose prompts
    are used and whose chosen answers become the judge's reference answers.
    """

    policy: str = ""
    reference: str = "smollm2"
    prompts: str = ""
    judges: list[str] = field(default_factory=lambda: ["ollama:llama3"])
    out_dir: str = "runs/judge"
    limit: int | None = None               # first N prompts (None = all)
    # answer generation: the same settings for both models
    max_new_tokens: int = 256
    temperature: float = 0.0               # 0 = greedy
    gen_seed: int = 123
    batch_size: int = 8
    dtype: str = "float32"
    # judging
    template: str = "pairwise"             # built-in name or a path to your own template file
    use_reference: bool = True             # show the prompt's known-good answer to the judge when there is one
    judge_temperature: float = 0.0
    judge_seed: int = 123
    judge_max_tokens: int = 512
    judge_num_ctx: int = 4096
    verdict: str = "auto"                  # generate (the judge writes JSON), logprob (local judges: read the
                                           # verdict from token probabilities), auto = logprob for local: judges
    attempts: int = 3                      # calls per order before a reply counts as unparseable
    concurrency: int = 4                   # judge calls in flight (match OLLAMA_NUM_PARALLEL)
    judge_identical: bool = False          # identical answers are a tie without asking (AlpacaEval's rule)
    cache: str | None = None               # judgment cache (default: OUT_DIR/judge-cache.sqlite)
    # statistics
    n_boot: int = 2000
    bootstrap_seed: int = 0
    # report
    examples: int = 6
    adversarial: int = 0                   # also measure flip rates under adversarial edits on N prompts
    generator_model: str | None = None     # model that generated the training pairs (self-preference check)
    pairs: str | None = None               # training pairs file to read the generator model from

    def __post_init__(self) -> None:
        if isinstance(self.judges, str):
            self.judges = [self.judges]
        if not self.judges:
            raise ValueError("judges: name at least one judge (e.g. ollama:llama3.1:8b)")
        if self.verdict not in ("auto", "generate", "logprob"):
            raise ValueError(f"verdict must be auto, generate or logprob, got {self.verdict!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.adversarial < 0:
            raise ValueError(f"adversarial must be 0 (off) or a number of prompts, got {self.adversarial}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out_dir) / "judge-cache.sqlite"
