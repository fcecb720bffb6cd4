"""Settings of ``prefloop judge`` (the ``[judge]`` table of a TOML config); flags are made from these fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefloop.config import ConfigError, check_choices, section, setting
from prefloop.llm.base import GenOptions, parse_spec
from prefloop.models import DTYPES, normalize_dtype
from prefloop.templates import PROMPT_FORMATS

VERDICTS = ("auto", "generate", "logprob")


@section("judge")
@dataclass
class JudgeConfig:
    """Held-out evaluation: policy vs reference on prompts it never trained on, judged by one or more judges.

    ``policy``/``reference`` are local models (a folder, a ``.gguf``, ``smollm2``; ``local:`` prefix optional) or
    served ones (``ollama:NAME``, e.g. after ``prefloop export``, or ``openai:NAME@URL``), answered alike.
    ``judges`` are client specs (``ollama:llama3.1:8b``, ``openai:MODEL@URL``, ``local:smollm2``); the first is
    the headline judge. ``prompts`` is a prompts file (Alpaca/JSONL/text) or a preference-pairs file whose prompts
    are used and whose chosen answers become the known-good answers shown to the judge.
    """

    policy: str = setting("", "the trained model: a folder, a .gguf, smollm2, or served: ollama:NAME, "
                              "openai:NAME@URL", runtime=True)
    reference: str = setting("smollm2", "its starting point, the SFT model (the reference model); local or served")
    prompts: str = setting("", "held-out prompts: Alpaca JSON/JSONL, JSONL with 'prompt', .txt, or a pairs file",
                           runtime=True)
    judges: list[str] = setting(help="judge spec: ollama:NAME, openai:NAME@URL, local:NAME, human (you, on the "
                                     "labelling screen; human:NAME names the rater), python:MODULE:FUNCTION (your "
                                     "function, judge/python_judge.py) or reward:PATH (a reward model); repeat for "
                                     "several judges (the first is the headline)", factory=lambda: ["ollama:llama3"],
                                flag="--judge")
    output_dir: str = setting("runs/judge", "output folder", runtime=True, flag="--output", short="-o",
                              aliases=("--out",), was=("out_dir",))
    limit: int | None = setting(None, "first N prompts only")
    # answer generation: the same settings for both models
    max_tokens: int = setting(256, "answer length cap in tokens (both models)", was=("max_new_tokens",),
                              aliases=("--max-new-tokens",))
    temperature: float = setting(0.0, "answer sampling temperature (0: greedy)")
    gen_seed: int = setting(123, "answer sampling seed")
    batch_size: int = setting(8, "answers generated per batch", runtime=True)
    dtype: str = setting("fp32", "dtype the models answer in", choices=DTYPES)
    prompt_format: str = setting("auto", "how held-out prompts reach both models, as the trainer renders them "
                                         "(auto: Alpaca rows as one chat turn for a model with a chat template) | "
                                         "text | chat | alpaca", choices=PROMPT_FORMATS)
    # judging
    validate: str | None = setting(None, "pairs whose better side is known (chosen/rejected): every judge is "
                                         "measured on them, both orders, before its win rate is shown",
                                   runtime=True, metavar="PAIRS")
    template: str = setting("pairwise", "judge prompt template: 'pairwise' or a path to your own file")
    show_known_good: bool = setting(True, "show the prompt's known-good answer to the judge when there is one",
                                    was=("use_reference",))
    judge_temperature: float = setting(0.0, "the judge's sampling temperature")
    judge_seed: int = setting(123, "the judge's seed")
    judge_max_tokens: int = setting(512, "the judge's reply length cap")
    judge_num_ctx: int = setting(4096, "the judge's context window (Ollama num_ctx)")
    verdict: str = setting("auto", "how a verdict is read: generated JSON (generate), or with the judge's token "
                                   "log-odds (logprob: a local judge scores the verdict tokens, a served one "
                                   "sends their log-probabilities along; auto = logprob)", choices=VERDICTS)
    score_known_good: bool = setting(True, "also score both models' answers 0-100 against the known-good answer "
                                           "with the headline judge (the seed's score mode)")
    attempts: int = setting(3, "asks per order before a reply counts as unparsed")
    min_parse_rate: float = setting(0.8, "below this share of parsed judge replies the run is not complete: a judge "
                                         "that answers nothing usable gives no win rate")
    concurrency: int = setting(4, "requests in flight to a served judge or answering model, per host (match "
                                  "OLLAMA_NUM_PARALLEL)", runtime=True)
    timeout_s: float = setting(300.0, "seconds a judge server may stay silent on a request", runtime=True,
                               flag="--timeout")
    job_timeout_s: float = setting(1800.0, "one deadline for judging one prompt (both orders, re-asks and "
                                           "retries); then it counts as failed and is retried on the next run",
                                   runtime=True)
    stall_s: float = setting(600.0, "stop judging when no judge call has been answered for this long",
                             runtime=True)
    judge_identical: bool = setting(False, "also ask the judge about identical answers (default: a tie, "
                                           "AlpacaEval's rule)")
    cache: str | None = setting(None, "judgment cache file (default OUTPUT/judge-cache.sqlite)", runtime=True)
    # statistics
    n_boot: int = setting(2000, "bootstrap resamples for the interval")
    bootstrap_seed: int = setting(0, "bootstrap seed")
    # report
    examples: int = setting(6, "side-by-side examples in the report")
    adversarial: int = setting(0, "also measure the judge's flip rate under adversarial edits on N prompts "
                                  "(0: off)")
    generator_model: str | None = setting(None, "model that generated the training pairs (self-preference "
                                                "check)")
    pairs: str | None = setting(None, "training pairs file: warns when held-out prompts are in it, and reads the "
                                      "generator model from it", runtime=True)
    quiet: bool = setting(False, "no progress output", runtime=True)

    def __post_init__(self) -> None:
        if isinstance(self.judges, str):
            self.judges = [self.judges]
        self.dtype = normalize_dtype(self.dtype)
        check_choices(self, "judge.")
        if not self.judges:
            raise ConfigError("judge.judges: name at least one judge (e.g. ollama:llama3.1:8b)")
        for name in ("attempts", "concurrency", "batch_size", "max_tokens", "judge_max_tokens",
                     "judge_num_ctx", "n_boot"):
            if getattr(self, name) < 1:
                raise ConfigError(f"judge.{name}: must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.min_parse_rate <= 1.0:
            raise ConfigError(f"judge.min_parse_rate: must be in [0, 1], got {self.min_parse_rate}")
        if self.adversarial < 0:
            raise ConfigError(f"judge.adversarial: must be 0 (off) or a number of prompts, got {self.adversarial}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"judge.limit: must be at least 1, got {self.limit}")
        for name in ("timeout_s", "job_timeout_s", "stall_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"judge.{name}: must be > 0 seconds, got {getattr(self, name)}")

    def score_options(self) -> GenOptions:
        """Options for a 0-100 score: the judge's own, with a short reply budget (a score is a number; a rambling
        small judge left at its verdict budget writes an essay)."""
        return GenOptions(temperature=self.judge_temperature, seed=self.judge_seed,
                          max_tokens=min(64, self.judge_max_tokens), num_ctx=self.judge_num_ctx)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.output_dir) / "judge-cache.sqlite"


IMPORT_FORMATS = ("auto", "ab", "labelstudio", "argilla")
LABEL_MODES = ("pair", "thumbs")


@section("label")
@dataclass
class LabelConfig:
    """``prefloop label``: a person picks the better of two answers in the terminal (or labels they already have
    are imported); the output is preference pairs ready for ``prefloop train``. See ``judge.label``. With ``mode =
    "thumbs"`` the person marks single answers good or bad instead, for KTO (``judge.thumbs``)."""

    mode: str = setting("pair", "pair: pick the better of two answers (pairs for DPO); thumbs: mark each single "
                                "answer good or bad (labelled answers for KTO)", choices=LABEL_MODES)
    source: str = setting("", "what to compare: JSONL of {id?, prompt, answers: [...]}, the rank strategy's pairs "
                              "(every candidate), or a pairs file to re-label or check", runtime=True, flag=False)
    output: str = setting("", "preference pairs JSONL (its label log, OUTPUT.labels.jsonl, is appended; the same "
                              "command resumes)", runtime=True, flag="--output", short="-o", metavar="PAIRS.jsonl")
    rater: str = setting("", "who is labelling, kept with every label (default: your login name)")
    seed: int = setting(0, "shuffles left and right per item, and picks the hidden repeats")
    repeats: float = setting(0.0, "share of items shown once more, later and the other way round, to measure "
                                  "your self-consistency (0.1: one in ten)")
    max_pairs: int = setting(6, "more than two answers to a prompt: compare at most this many of their pairs")
    limit: int = setting(0, "first N input rows only (0: all)")
    import_labels: str = setting("", "labels people already gave, instead of the screen: a CSV/JSONL of prompt, "
                                     "answer_a, answer_b, label (A, B or tie), a Label Studio pairwise export or an "
                                     "Argilla ranking export", runtime=True, flag="--import", metavar="FILE")
    import_format: str = setting("auto", "the --import file's format (auto: from its content)",
                                 choices=IMPORT_FORMATS, flag="--format")
    prompt_column: str = setting("", "--import: the prompt's column (default prompt)")
    a_column: str = setting("", "--import: answer A's column (default answer_a; Label Studio: text1, the left one)")
    b_column: str = setting("", "--import: answer B's column (default answer_b; Label Studio: text2)")
    label_column: str = setting("", "--import: the label's column (default label; Argilla: the ranking question, "
                                    "default ranking)")
    rater_column: str = setting("rater", "--import: the rater's column, when the file has one (A/B files)")
    quiet: bool = setting(False, "no summary", runtime=True)

    def __post_init__(self) -> None:
        check_choices(self, "label.")
        if self.mode == "thumbs" and self.import_labels:
            raise ConfigError("label.import_labels: imports are pairwise labels; mode = \"thumbs\" marks answers on "
                              "the screen only (drop --import, or use --mode pair)")
        if not 0.0 <= self.repeats < 1.0:
            raise ConfigError(f"label.repeats: a share in [0, 1), got {self.repeats}")
        if self.max_pairs < 1:
            raise ConfigError(f"label.max_pairs: must be at least 1, got {self.max_pairs}")
        if self.limit < 0:
            raise ConfigError(f"label.limit: must be 0 (all) or more, got {self.limit}")

    @property
    def who(self) -> str:
        return self.rater or login_name()


def login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "rater"


def is_human(spec: str) -> bool:
    """A judge setting that names a person (``human`` or ``human:NAME``), not a model. Kept here, beside the
    setting, so the loop's config can tell without importing the labelling screen."""
    try:
        return parse_spec(spec).person
    except ValueError:
        return False


def rater_of(spec: str) -> str:
    return parse_spec(spec).model or login_name()
