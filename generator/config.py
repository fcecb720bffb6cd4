"""Settings for ``prefloop generate``: one dataclass, filled from flags, a TOML ``[generate]`` section and ``--set``.

Settings that change what a pair contains (strategy, models, axis, sampling, seed, prompt style) go into every
pair's id; settings that only change how fast or how loudly it runs (concurrency, retries, fsync) do not, so a
rerun with more workers resumes the same file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prefloop.llm.base import parse_spec

STRATEGIES = ("rewrite", "rank", "contrast")
RECIPE_PROMPTS = ("auto", "clean", "verbatim", "fewshot")


@dataclass
class GenerateConfig:
    """What to generate from where, with which models, and how hard to push the server."""

    source: str = ""                       # prompts: Alpaca JSON/JSONL, JSONL with "prompt", .txt, HF dataset
    output: str = ""                       # preference pairs JSONL (appended; rerun resumes)
    strategy: str = "rewrite"              # rewrite | rank | contrast
    model: str = "local:smollm2"           # the writing model: ollama:NAME (bare NAME too), openai:NAME@URL, local:NAME
    models: list[str] = field(default_factory=list)   # rank: candidate models (default: [model])
    judge: str = ""                        # rank: scoring model (default: model)
    sft_model: str = "local:smollm2"       # contrast: the model whose own answers become the rejected side
    # rewrite: the axis and its two directions; the first direction is the better side
    axis: str = "politeness"
    better: str = "polite"
    worse: str = "impolite"
    # auto: fewshot for a local (small) rewriter, clean for a served one | clean (our wording) | verbatim (the
    # ch07 notebook's, quirks included) | fewshot (worked examples as earlier turns; small models keep the answer)
    recipe_prompt: str = "auto"
    k: int = 4                             # rank: candidates per prompt
    min_margin: float = 10.0               # rank: drop pairs whose best-worst score gap (0-100) is smaller
    temperature: float = 0.0               # rewrite/contrast; rank samples at rank_temperature
    rank_temperature: float = 0.8
    max_tokens: int = 512
    num_ctx: int = 4096
    seed: int = 123
    limit: int = 0                         # first N prompts only (0 = all)
    concurrency: int = 0                   # requests in flight; 0 = match the server (see resolved_concurrency)
    max_attempts: int = 3                  # per job and run, on top of the client's own retries
    backoff_s: float = 1.0
    abort_after: int = 25                  # stop after this many failures in a row (server down, model missing)
    timeout_s: float = 600.0               # per request, once admitted by the client
    fsync: bool = False                    # fsync each line (power-loss safety; costs ~ms per record)
    skip_bad: bool = False                 # skip bad prompt records (counted) instead of stopping
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'")
        if self.recipe_prompt not in RECIPE_PROMPTS:
            raise ValueError(f"recipe_prompt must be one of {', '.join(RECIPE_PROMPTS)}, got '{self.recipe_prompt}'")
        for spec in [self.model, *self.models, self.sft_model] + ([self.judge] if self.judge else []):
            parse_spec(spec)  # a bad spec fails here, not an hour in
        if self.k < 2:
            raise ValueError(f"k must be at least 2 (best and worst), got {self.k}")
        if self.concurrency < 0:
            raise ValueError(f"concurrency must be 0 (auto) or more, got {self.concurrency}")
        if self.strategy == "contrast" and parse_spec(self.model) == parse_spec(self.sft_model):
            raise ValueError(f"contrast needs two different models; model and sft_model are both '{self.model}'")
        if self.better.strip().lower() == self.worse.strip().lower():
            raise ValueError(f"better and worse directions must differ, both are '{self.better}'")

    @property
    def rewrite_style(self) -> str:
        if self.recipe_prompt != "auto":
            return self.recipe_prompt
        return "fewshot" if parse_spec(self.model).backend == "local" else "clean"

    @property
    def candidate_models(self) -> list[str]:
        return list(self.models) or [self.model]

    @property
    def judge_model(self) -> str:
        return self.judge or self.model

    def specs_used(self) -> list[str]:
        """Every model spec the strategy calls (for preflight and concurrency)."""
        if self.strategy == "rewrite":
            return [self.model]
        if self.strategy == "rank":
            return list(dict.fromkeys([*self.candidate_models, self.judge_model]))
        return list(dict.fromkeys([self.model, self.sft_model]))

    def resolved_concurrency(self) -> int:
        """Requests in flight. An explicit setting wins; else the backends decide. ``local`` alone: its batch
        size (8; concurrent requests become one batched generate). Ollama: ``OLLAMA_NUM_PARALLEL`` slots when set
        here, plus a quarter more in flight so every slot stays busy while replies are read; else 4.
        OpenAI-compatible servers batch: 8."""
        if self.concurrency:
            return self.concurrency
        backends = {parse_spec(s).backend for s in self.specs_used()}
        if backends == {"local"}:
            return 8  # the local client gathers concurrent chats into one batched generate (its batch size)
        if "ollama" in backends:
            slots = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
            if slots.isdigit() and int(slots) > 0:
                return int(slots) + max(1, int(slots) // 4)
            return 4
        return 8

    def identity(self) -> dict[str, Any]:
        """The settings that decide what a pair contains (part of every id)."""
        base: dict[str, Any] = {"strategy": self.strategy, "seed": self.seed, "max_tokens": self.max_tokens}
        if self.strategy == "rewrite":
            base.update(model=self.model, axis=self.axis, better=self.better, worse=self.worse,
                        recipe_prompt=self.rewrite_style, temperature=self.temperature)
        elif self.strategy == "rank":
            base.update(models=self.candidate_models, judge=self.judge_model, k=self.k,
                        min_margin=self.min_margin, temperature=self.rank_temperature)
        else:
            base.update(model=self.model, sft_model=self.sft_model, temperature=self.temperature)
        return base
