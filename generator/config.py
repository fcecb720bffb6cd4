"""Settings for ``prefloop generate``: one dataclass, filled from flags, a TOML ``[generate]`` section and ``--set``.

Settings that change what a pair contains (strategy, models, axis, sampling, seed, prompt style) go into every
pair's id (``identity()``); settings marked ``runtime`` only change how fast or how loudly it runs (concurrency,
retries, fsync) and do not, so a rerun with more workers resumes the same file. A test checks that every field is
one or the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prefloop.config import ConfigError, check_choices, section, setting
from prefloop.llm.base import parse_spec, spec_identity
from prefloop.templates import PROMPT_FORMATS
from prefloop.llm.hosts import Host, parse_hosts

STRATEGIES = ("rewrite", "rank", "contrast", "score")
RECIPE_PROMPTS = ("auto", "clean", "verbatim", "fewshot")


@section("generate")
@dataclass
class GenerateConfig:
    """What to generate from where, with which models, and how hard to push the server."""

    source: str = setting("", "prompts: Alpaca JSON/JSONL, JSONL with 'prompt', .txt, or a dataset", runtime=True,
                          flag=False)
    output: str = setting("", "preference pairs JSONL (appended; a rerun resumes it)", runtime=True,
                          flag="--output", short="-o", metavar="PAIRS.jsonl")
    mix_settings: bool = setting(False, "add pairs beside ones made with other settings (another model, "
                                        "temperature, strategy) in --output; without it that is refused", runtime=True)
    strategy: str = setting("rewrite", "rewrite (the reference recipe), rank (judge-scored candidates), "
                                       "contrast (on-policy rejected answers) or score (judge-scored answers "
                                       "labelled good or bad by --threshold, for KTO; no pairs)", choices=STRATEGIES)
    model: str = setting("local:smollm2", "the writing model: ollama:NAME (or a bare NAME), openai:NAME@URL, "
                                          "local:NAME")
    models: list[str] = setting(help="rank/score: candidate models, comma-separated or repeated (default: --model)",
                                factory=list)
    judge: str = setting("", "rank/score: scoring model (default: --model)")
    sft_model: str = setting("local:smollm2", "contrast: the model whose own answers become the rejected side")
    # rewrite: the axis and its two directions; the first direction is the better side
    axis: str = setting("politeness", "rewrite: the quality the pairs differ in")
    better: str = setting("polite", "rewrite: the better direction")
    worse: str = setting("impolite", "rewrite: the worse direction")
    recipe_prompt: str = setting("auto", "rewrite: our wording (clean), the ch07 notebook's (verbatim), worked "
                                         "examples (fewshot); auto = fewshot for local models, clean otherwise",
                                 choices=RECIPE_PROMPTS)
    k: int = setting(4, "rank/score: candidates (score: labelled answers) per prompt")
    min_margin: float = setting(10.0, "rank: drop pairs whose best-worst score gap (0-100) is smaller")
    threshold: float = setting(50.0, "score: an answer the judge scores at least this (0-100) is desirable, below "
                                     "it undesirable")
    temperature: float = setting(0.0, "rewrite/contrast sampling temperature (rank and score use rank_temperature)")
    rank_temperature: float = setting(0.8, "rank/score: candidates' sampling temperature")
    max_tokens: int = setting(512, "reply length cap in tokens")
    round: int = setting(0, "the round of `prefloop run` these pairs belong to, kept in each pair's meta",
                         runtime=True, flag=False)
    prompt_format: str = setting("auto", "contrast/rank: how a prompt reaches the models answering it, as the "
                                         "trainer renders it (auto: Alpaca rows as one chat turn for a model with a "
                                         "chat template) | text | chat | alpaca; `prefloop run` copies [train]'s",
                                 choices=PROMPT_FORMATS)
    num_ctx: int = setting(4096, "the server's context window (Ollama num_ctx); it changes no pair unless a prompt "
                                 "does not fit, which the client warns about", runtime=True)
    seed: int = setting(123, "sampling seed (and the rewrite direction's coin)")
    limit: int = setting(0, "first N prompts only (0: all); which prompts, not what a pair holds", runtime=True)
    concurrency: int = setting(0, "requests in flight per model (0: match the servers' slots, see "
                                  "resolved_concurrency)", runtime=True)
    hosts: list[str] = setting(help="Ollama servers for every ollama: model that names none itself: URL or "
                                    "URL=SLOTS (that server's OLLAMA_NUM_PARALLEL), comma-separated or repeated; each "
                                    "request goes to the least busy one with a free slot", factory=list, runtime=True)
    max_attempts: int = setting(3, "tries per prompt and run (each request also has the client's own retries)",
                                runtime=True)
    backoff_s: float = setting(1.0, "seconds before a failed prompt's next try (doubling)", runtime=True)
    abort_after: int = setting(25, "stop after this many failures in a row (server down, model missing)",
                               runtime=True)
    timeout_s: float = setting(600.0, "seconds a server may stay silent on one request", runtime=True,
                               flag="--timeout")
    job_timeout_s: float = setting(1800.0, "one deadline for all tries of one prompt (its retries and backoff "
                                           "included); then it counts as failed and is retried on the next run",
                                   runtime=True)
    stall_s: float = setting(600.0, "stop the run when no request has been answered for this long (a server "
                                    "that accepts connections and says nothing)", runtime=True)
    fsync: bool = setting(False, "fsync every pair (power-loss safety; costs ~ms per pair)", runtime=True)
    skip_bad: bool = setting(False, "skip bad prompt records (counted) instead of stopping", runtime=True)
    quiet: bool = setting(False, "no progress bar", runtime=True)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"generate.{name}: {why}")

        check_choices(self, "generate.")
        try:
            parse_hosts(self.hosts)
        except ValueError as exc:
            bad("hosts", str(exc))
        for name, spec in [("model", self.model), *(("models", m) for m in self.models),
                           ("sft_model", self.sft_model)] + ([("judge", self.judge)] if self.judge else []):
            try:
                parsed = parse_spec(spec)  # a bad spec fails here, not an hour in
            except ValueError as exc:
                bad(name, str(exc))
            if name != "judge" and not parsed.chat:
                bad(name, f"{spec!r} is a {parsed.kind} judge, not a model that writes answers")
        if self.k < (2 if self.strategy == "rank" else 1):
            bad("k", f"must be at least 2 (best and worst), got {self.k}" if self.strategy == "rank" else
                f"must be at least 1, got {self.k}")
        if not 0.0 <= self.threshold <= 100.0:
            bad("threshold", f"a score between 0 and 100, got {self.threshold:g}")
        for name in ("concurrency", "limit", "abort_after"):
            if getattr(self, name) < 0:
                bad(name, f"must be 0 or more, got {getattr(self, name)}")
        for name in ("max_tokens", "num_ctx", "max_attempts"):
            if getattr(self, name) < 1:
                bad(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("timeout_s", "job_timeout_s", "stall_s"):
            if getattr(self, name) <= 0:
                bad(name, f"must be > 0 seconds, got {getattr(self, name)}")
        if self.strategy == "contrast" and parse_spec(self.model) == parse_spec(self.sft_model):
            bad("sft_model", f"contrast needs two different models; model and sft_model are both '{self.model}'")
        if self.better.strip().lower() == self.worse.strip().lower():
            bad("worse", f"better and worse directions must differ, both are '{self.better}'")

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
        if self.strategy in ("rank", "score"):
            return list(dict.fromkeys([*self.candidate_models, self.judge_model]))
        return list(dict.fromkeys([self.model, self.sft_model]))

    def resolved_concurrency(self) -> int:
        """Prompts in flight in the runner (and, with one Ollama host, that client's slots). An explicit setting
        wins; else the backends decide. ``local`` alone: its batch size (8; concurrent requests become one
        batched generate). Ollama: the sum of its hosts' slots (``hosts_of``); OpenAI-compatible servers
        batch: 8."""
        if self.concurrency:
            return self.concurrency
        backends = {parse_spec(s).backend for s in self.specs_used()}
        if backends == {"local"}:
            return 8  # the local client gathers concurrent chats into one batched generate (its batch size)
        if "ollama" in backends:
            return max(sum(h.slots or default_slots() for h in self.hosts_of(s)) for s in self.specs_used()
                       if parse_spec(s).backend == "ollama")
        return 8

    def hosts_of(self, spec: str) -> list[Host]:
        """The Ollama hosts serving ``spec``: its own ``@URL,...``, else ``hosts``, else the one default host."""
        return parse_hosts(parse_spec(spec).base_url or self.hosts) or [Host("")]

    def identity(self) -> dict[str, Any]:
        """The settings that decide what a pair contains (part of every id). Models are named without the hosts
        that serve them (``spec_identity``): adding a host changes no id, so a run resumes across it."""
        base: dict[str, Any] = {"strategy": self.strategy, "seed": self.seed, "max_tokens": self.max_tokens}
        if self.strategy == "rewrite":
            base.update(model=spec_identity(self.model), axis=self.axis, better=self.better, worse=self.worse,
                        recipe_prompt=self.rewrite_style, temperature=self.temperature)
        elif self.strategy == "rank":
            base.update(prompt_format=self.prompt_format)
            base.update(models=[spec_identity(m) for m in self.candidate_models],
                        judge=spec_identity(self.judge_model), k=self.k, min_margin=self.min_margin,
                        temperature=self.rank_temperature)
        elif self.strategy == "score":
            base.update(prompt_format=self.prompt_format, models=[spec_identity(m) for m in self.candidate_models],
                        judge=spec_identity(self.judge_model), threshold=self.threshold,
                        temperature=self.rank_temperature)
        else:
            base.update(model=spec_identity(self.model), sft_model=spec_identity(self.sft_model),
                        temperature=self.temperature, prompt_format=self.prompt_format)
        return base


def default_slots() -> int:
    """Requests in flight for an Ollama host whose slots are not given: ``OLLAMA_NUM_PARALLEL`` when set here,
    plus a quarter more so every slot stays busy while replies are read; else 4."""
    slots = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
    if slots.isdigit() and int(slots) > 0:
        return int(slots) + max(1, int(slots) // 4)
    return 4
