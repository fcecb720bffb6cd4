"""``generate(cfg)``: prompts in, preference pairs out, through the durable runner.

The plain path: load prompts -> build clients -> preflight every one (fail before any work) -> one job per prompt
(id from the prompt and the settings that shape a pair) -> the strategy's ``make_pair`` per job -> the runner
appends each pair at once -> a summary (written, failed, dropped and why) printed and saved beside the output.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefloop.files import atomic_write_json, count_lines, same_file, writable
from prefloop.llm.base import ChatReply, GenOptions, parse_spec
from prefloop.records import PromptRecord, stable_id, user_message
from prefloop.runner import Job, Runner
from prefloop.sources import load_prompts
from prefloop.stage import StageResult
from prefloop.templates import prompt_for

from generator.config import GenerateConfig

if TYPE_CHECKING:
    from judge.scoring import Score


@dataclass
class GenerateResult(StageResult):
    """What a ``generate`` run did (saved beside the output as ``PAIRS.jsonl.summary.json``); ``run`` is the
    runner's own account (retries, failure reasons)."""

    output: str = ""
    prompts: int = 0
    written: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0
    total_in_output: int = 0
    aborted: str | None = None
    elapsed_s: float = 0.0
    busy_s: dict[str, float] = field(default_factory=dict)  # seconds with an answer / a score being asked (Busy)
    run: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, output: str | Path) -> "GenerateResult | None":
        """The summary saved beside ``output`` (None before a run finished once)."""
        return cls.read(summary_path(output))


class Busy:
    """Wall-clock seconds during which at least one call of a kind was in flight: with many prompts in flight,
    summed call times would count the same second many times over. Two kinds (answering, scoring) overlap when
    prompts are in different phases, so their figures can add up to more than the run's time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._in_flight = 0
        self._since = 0.0

    def __enter__(self) -> "Busy":
        if self._in_flight == 0:
            self._since = time.perf_counter()
        self._in_flight += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.seconds += time.perf_counter() - self._since


def strategy_module(name: str) -> Any:
    if name == "rewrite":
        from generator import rewrite
        return rewrite
    if name == "rank":
        from generator import rank
        return rank
    if name == "score":
        from generator import score
        return score
    from generator import contrast
    return contrast


def pair_id(rec: PromptRecord, cfg: GenerateConfig) -> str:
    """Same prompt, same known-good answer, same pair-shaping settings -> same id, in any run."""
    return stable_id("pair", rec.prompt, rec.known_good, cfg.identity())


class Context:
    """What a strategy needs: the settings, one client per model spec, and helpers that record provenance.

    Requests are not bounded here: each served client keeps at most its slots in flight, and a local client
    gathers concurrent calls into batches, so strategies simply await what they need.
    """

    def __init__(self, cfg: GenerateConfig, clients: dict[str, Any], runner: Runner | None = None):
        self.cfg, self.clients, self.runner = cfg, clients, runner
        self._templated: dict[str, bool] = {}
        self._scorer: Any = None
        self.busy = {"answer": Busy(), "score": Busy()}  # the cost of a rank round, split (GenerateResult.busy_s)

    def options(self, temperature: float, seed: int | None = None, max_tokens: int | None = None) -> GenOptions:
        return GenOptions(temperature=temperature, seed=self.cfg.seed if seed is None else seed,
                          max_tokens=max_tokens or self.cfg.max_tokens, num_ctx=self.cfg.num_ctx)

    async def chat(self, spec: str, messages: list[dict[str, str]], *, temperature: float,
                   seed: int | None = None, max_tokens: int | None = None) -> ChatReply:
        reply = await self.clients[spec].chat(messages, options=self.options(temperature, seed, max_tokens))
        if self.runner is not None:
            self.runner.note_answer()
            if reply.attempts > 1:
                self.runner.note_retries(reply.attempts - 1)
        return reply

    async def answer(self, spec: str, rec: PromptRecord, *, temperature: float, seed: int | None = None) -> str:
        """A model's own answer to the prompt, rendered by the rule the trainer and the judge use
        (``prefloop.templates.prompt_for``): an Alpaca row reaches a model with a chat template as one chat turn,
        so a local (SFT) model answers on-policy, batched with the other prompts in flight; a served chat model
        gets the prompt as a user turn."""
        with self.busy["answer"]:
            return await self._answer(spec, rec, temperature=temperature, seed=seed)

    async def _answer(self, spec: str, rec: PromptRecord, *, temperature: float, seed: int | None) -> str:
        if parse_spec(spec).kind == "local":
            prompt, _ = prompt_for(rec, self.cfg.prompt_format, self.has_chat_template(spec))
            text = await self.clients[spec].complete(prompt, self.options(temperature, seed))
            if self.runner is not None:
                self.runner.note_answer()
            return text
        prompt, _ = prompt_for(rec, self.cfg.prompt_format, True)
        messages = prompt if isinstance(prompt, list) else user_message(prompt)
        return (await self.chat(spec, messages, temperature=temperature, seed=seed)).text

    def has_chat_template(self, spec: str) -> bool:
        """Whether a local model's tokenizer has a chat template (read once per model)."""
        if spec not in self._templated:
            from prefloop.models import load_tokenizer

            tokenizer = load_tokenizer(parse_spec(spec).model)
            self._templated[spec] = bool(getattr(tokenizer, "chat_template", None))
        return self._templated[spec]

    def scorer(self) -> Any:
        """The judge as it scores: a local one from its token probabilities (``judge.logprob.scoring_client``),
        wrapped once so its lock keeps one scoring forward at a time."""
        if self._scorer is None:
            from judge.logprob import scoring_client

            self._scorer = scoring_client(self.cfg.judge_model, self.clients[self.cfg.judge_model])
        return self._scorer

    async def score(self, rec: PromptRecord, text: str) -> Score:
        """The judge's 0-100 score of ``text`` as an answer to ``rec`` (rank), with its known-good answer."""
        from judge.scoring import score_answer

        with self.busy["score"]:
            score = await score_answer(self.scorer(), rec.prompt, text, known_good=rec.known_good)
        if self.runner is not None:
            self.runner.note_answer()
        return score

    def pair(self, rec: PromptRecord, chosen: str, rejected: str, meta: dict[str, Any],
             reply: ChatReply | None = None) -> dict[str, Any]:
        """A record ``load_preferences`` reads, with provenance (model, strategy, options, seed, time)."""
        return {"prompt": rec.prompt, "chosen": chosen, "rejected": rejected, "meta": self.provenance(rec, meta, reply)}

    def labelled(self, rec: PromptRecord, completion: str, label: bool, meta: dict[str, Any]) -> dict[str, Any]:
        """A record ``load_labelled`` reads (one answer, desirable or not), with the same provenance as a pair."""
        return {"prompt": rec.prompt, "completion": completion, "label": label, "meta": self.provenance(rec, meta)}

    def provenance(self, rec: PromptRecord, meta: dict[str, Any], reply: ChatReply | None = None) -> dict[str, Any]:
        """``meta`` with where the record came from: the prompt's source row, strategy, settings, time, usage."""
        cfg = self.cfg
        full = {k: rec.meta[k] for k in ("prompt_format", "instruction", "input") if k in rec.meta}
        if rec.known_good is not None:
            full["output"] = rec.known_good
        full.update(meta)
        if cfg.round:
            full["round"] = cfg.round  # which round of `prefloop run` sampled and ranked this pair
        full.update(source_id=rec.id, strategy=cfg.strategy, settings=cfg.identity(),
                    time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        full.setdefault("options", {"num_ctx": cfg.num_ctx, "max_tokens": cfg.max_tokens})
        if reply is not None:
            full.setdefault("usage", {"prompt_tokens": reply.prompt_tokens,
                                      "completion_tokens": reply.completion_tokens})
            if reply.extra:
                full["options"].update({k: v for k, v in reply.extra.items() if k in ("seed", "finish_reason")})
            if reply.model:
                full.setdefault("served_model", reply.model)
        return full


def summary_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".summary.json")


def other_settings(output: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The settings of pairs already in ``output`` when they differ from this run's (new pairs get other ids
    and land beside them: worth a warning, not an error)."""
    path = Path(output)
    if not path.exists():
        return None
    from prefloop.jsonl import iter_jsonl

    for _, row in iter_jsonl(path):
        settings = row.get("meta", {}).get("settings") if isinstance(row, dict) else None
        if settings is not None and settings != identity:
            return settings
    return None


def _make_clients(cfg: GenerateConfig) -> dict[str, Any]:
    """One client per model spec. An Ollama model on several hosts gets each host's own slots (the default
    ``default_slots()``); on one host, the run's concurrency, as before hosts existed."""
    from generator.config import default_slots
    from prefloop.llm import make_client

    clients: dict[str, Any] = {}
    for spec in cfg.specs_used():
        backend = parse_spec(spec).backend
        if not parse_spec(spec).chat:  # a python: or reward: judge scores the rank strategy's candidates
            from judge.kinds import make_direct

            clients[spec] = make_direct(spec)
        elif backend == "ollama":
            several = len(cfg.hosts_of(spec)) > 1
            clients[spec] = make_client(spec, timeout=cfg.timeout_s, hosts=cfg.hosts or None,
                                        slots=default_slots() if several else cfg.resolved_concurrency())
        elif backend == "openai":
            clients[spec] = make_client(spec, timeout=cfg.timeout_s, slots=cfg.resolved_concurrency())
        else:
            clients[spec] = make_client(spec, batch_size=cfg.resolved_concurrency())
    return clients


async def generate_async(cfg: GenerateConfig, console: Any = None, clients: dict[str, Any] | None = None
                         ) -> GenerateResult:
    """The async core (``clients`` may be passed in by callers that already hold them)."""
    if not cfg.source or not cfg.output:
        raise ValueError("generate needs a source (prompts) and an output (pairs JSONL)")
    if Path(cfg.source).exists() and same_file(cfg.output, cfg.source):
        raise ValueError(f"--output {cfg.output} is the prompts file {cfg.source}: pairs would be appended to "
                         "your prompts; write them to another file")
    writable(cfg.output, "--output")
    records, report = load_prompts(cfg.source, skip_bad=cfg.skip_bad, limit=cfg.limit)
    strategy = strategy_module(cfg.strategy)
    if cfg.strategy == "rewrite" and not any(r.known_good for r in records):
        raise ValueError(f"{cfg.source}: the rewrite strategy needs known-good answers (an Alpaca 'output' or a "
                         f"'reference' field) and no prompt has one; use --strategy rank or contrast")
    before = other_settings(cfg.output, cfg.identity())
    if before is not None:
        changed = {k: v for k, v in cfg.identity().items() if before.get(k) != v}
        what = f"(now {changed}, before { {k: before.get(k) for k in changed} })"
        if not cfg.mix_settings:  # one file of pairs from two recipes is rarely what anyone meant
            raise ValueError(f"--output {cfg.output} holds pairs made with other settings {what}; use another "
                             "--output to keep the sets apart, or --mix-settings to add these beside them")
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {cfg.output} holds pairs made with other settings {what}; "
                          "new pairs are added beside them (--mix-settings)")
    owned = clients is None
    clients = _make_clients(cfg) if clients is None else clients
    try:
        for spec, client in clients.items():  # fail fast: server down, too old, model missing
            await client.preflight()
        runner = Runner(cfg.output, concurrency=cfg.resolved_concurrency(), max_attempts=cfg.max_attempts,
                        backoff_s=cfg.backoff_s, abort_after=cfg.abort_after, job_timeout_s=cfg.job_timeout_s,
                        stall_s=cfg.stall_s, fsync=cfg.fsync,
                        console=console, progress=False if cfg.quiet else None,
                        description=f"generate ({cfg.strategy})", unit="answers" if cfg.strategy == "score" else "pairs")
        ctx = Context(cfg, clients, runner)

        if cfg.strategy == "score":   # labelled answers, several jobs per prompt (generator.score)
            jobs, make = strategy.jobs(cfg, records), strategy.make_record
        else:
            jobs, make = [Job(id=pair_id(rec, cfg), data=rec) for rec in records], strategy.make_pair

        async def work(job: Job) -> Any:
            return await make(ctx, job.data)

        run = await runner.run(jobs, work)
    finally:
        if owned:
            for client in clients.values():
                await client.aclose()
    dropped = dict(run.dropped)
    for why, n in report.dropped.items():
        dropped[f"source: {why}"] = n
    if report.errors:
        dropped["source: bad record"] = len(report.errors)
    status = "interrupted" if run.interrupted else ("complete" if run.done else "failed")
    reason = ("interrupted; run the same command again to resume" if run.interrupted else
              f"stopped: {run.aborted}" if run.aborted else
              f"{run.failed} prompt(s) failed; run the same command again to retry them" if run.failed else "")
    summary = GenerateResult(status=status, reason=reason,
                             outputs={"labelled" if cfg.strategy == "score" else "pairs": str(cfg.output)},
                             output=str(cfg.output), prompts=len(records), written=run.written, failed=run.failed,
                             dropped=dropped, skipped_existing=run.skipped_existing + run.skipped_dropped,
                             total_in_output=count_lines(cfg.output), aborted=run.aborted,
                             elapsed_s=round(run.elapsed_s, 3), run=run.to_json(),
                             busy_s={k: round(b.seconds, 3) for k, b in ctx.busy.items() if b.seconds})
    atomic_write_json(summary_path(cfg.output), summary.to_json())
    return summary


def generate(cfg: GenerateConfig, console: Any = None, clients: dict[str, Any] | None = None) -> GenerateResult:
    """Run the generator to the end (or to Ctrl-C); print and save the summary."""
    summary = asyncio.run(generate_async(cfg, console, clients))
    if console is not None:
        print_summary(summary, console)
    return summary


def print_summary(s: GenerateResult, console: Any) -> None:
    state = "interrupted" if s.interrupted else (f"stopped: {s.aborted}" if s.aborted else "finished")
    what = "labelled answers" if "labelled" in s.outputs else "pairs"
    console.print(f"[bold]generate {state}[/bold] in {s.elapsed_s:.1f}s: {s.written} {what} written, "
                  f"{s.skipped_existing} already done, {s.failed} failed; {s.total_in_output} {what} in {s.output}")
    if s.busy_s:
        console.print("  time with a call in flight: " + ", ".join(f"{k} {v:.0f} s" for k, v in s.busy_s.items())
                      + (" (they overlap)" if len(s.busy_s) > 1 else ""))
    for why, n in sorted(s.dropped.items()):
        console.print(f"  dropped {n}: {why}")
    if s.failed:
        console.print(f"  failures (reasons in {Path(s.output).name}.failures.jsonl): "
                      + ", ".join(f"{k} {v}" for k, v in s.run.get("failure_reasons", {}).items())
                      + "; run the same command again to retry them")
    if s.interrupted:
        console.print("  run the same command again to resume")
