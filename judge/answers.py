"""Both models' held-out answers, made alike: the policy's and the reference's, each resumable from its
``gen-*.jsonl``, written together to ``answers.jsonl``.

A local model answers in batches in this process; a served one (``ollama:NAME``, ``openai:NAME@URL``, e.g. the
trained model after ``prefloop export``) through the durable runner with the server's slots in flight. Prompts
reach both the way the trainer rendered them (``prefloop.templates``): the way the model is used. What shapes an
answer is recorded per side (``AnswerSettings``) and two sides that would be answered differently are refused
before any answer is made: a win rate between them would measure that difference, not the training.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from judge.config import JudgeConfig
from judge.results import AnswerRow, AnswerSettings, write_answers
from prefloop.jsonl import JsonlAppender, iter_jsonl
from prefloop.llm.base import GenOptions, LLMError, ModelFacts, parse_spec, spec_identity
from prefloop.progress import Progress
from prefloop.records import Prompt, PromptRecord, stable_id
from prefloop.runner import Job, Runner
from prefloop.templates import prompt_for


def note(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)


def local_spec(name: str) -> str:
    return name if name.startswith(("local:", "ollama:", "openai:")) else f"local:{name}"


def gen_options(cfg: JudgeConfig, seed_offset: int = 0) -> GenOptions:
    return GenOptions(temperature=cfg.temperature, seed=cfg.gen_seed + seed_offset, max_tokens=cfg.max_tokens)


def local_facts(spec: str, cfg: JudgeConfig, needs_template: bool) -> ModelFacts:
    """A local model's facts; its chat template's digest (empty without one) only when a prompt could render
    through it (otherwise the tokenizer is not even loaded)."""
    import hashlib

    from prefloop.fingerprint import model_identity

    template = ""
    if needs_template:
        from prefloop.models import load_tokenizer

        jinja = getattr(load_tokenizer(parse_spec(spec).model), "chat_template", None) or ""
        template = hashlib.sha256(jinja.encode()).hexdigest()[:16] if jinja else ""
    return ModelFacts(runtime="transformers", digest=model_identity(parse_spec(spec).model), quantization=cfg.dtype,
                      template=template)


def served_client(spec: str, cfg: JudgeConfig) -> Any:
    from prefloop.llm import make_client

    return make_client(spec, slots=cfg.concurrency, timeout=cfg.timeout_s)


def answer_prompt(rec: PromptRecord, forced: str, has_chat_template: bool) -> tuple[Prompt, str]:
    """The prompt as the model gets it (the trainer's rendering, ``prefloop.templates``) and its format's name."""
    return prompt_for(rec, forced, has_chat_template)


def side_settings(spec: str, cfg: JudgeConfig, records: list[PromptRecord], seed_offset: int,
                  client: Any = None) -> AnswerSettings:
    """How ``spec`` will answer: the shared sampling settings, the formats its prompts are rendered in (a model
    with a chat template gets Alpaca rows as a chat turn) and what serves it (a served model is asked)."""
    if client is None:
        facts = local_facts(spec, cfg, any(answer_prompt(r, cfg.prompt_format, True)[1] == "chat" for r in records))
    else:
        async def ask() -> ModelFacts:
            await client.preflight()
            return await client.facts()

        facts = asyncio.run(ask())
    chat = bool(facts.template)
    formats = sorted({answer_prompt(r, cfg.prompt_format, chat)[1] for r in records})
    options = gen_options(cfg, seed_offset)
    return AnswerSettings(model=spec_identity(spec), temperature=options.temperature, seed=options.seed,
                          max_tokens=options.max_tokens, prompt_format="+".join(formats) or "text",
                          runtime=facts.runtime, template=facts.template if "chat" in formats else "",
                          quantization=facts.quantization, digest=facts.digest)


def answer_settings(spec: str, options: GenOptions, cfg: JudgeConfig) -> str:
    """What decides a local model's answer besides its prompt: the key of its ``gen-*.jsonl`` rows."""
    return stable_id(spec, options.temperature, options.seed, options.max_tokens, cfg.dtype, cfg.prompt_format)


def answers_key(spec: str, settings: AnswerSettings, cfg: JudgeConfig) -> str:
    """What a row of ``gen-*.jsonl`` is reused under: every answer setting, and for a served model what serves
    it (a model re-exported under the same name has a new digest, so new answers)."""
    if settings.runtime == "transformers":
        return answer_settings(spec, GenOptions(temperature=settings.temperature, seed=settings.seed,
                                                max_tokens=settings.max_tokens), cfg)
    return settings.key()


def generate_side(spec: str, records: list[PromptRecord], path: Path, cfg: JudgeConfig, console: Any,
                  settings: AnswerSettings, client: Any = None, formats: dict[str, str] | None = None
                  ) -> dict[str, str]:
    """Answers of one model for every record, resuming from ``path`` (rows keyed by prompt id + settings);
    ``formats`` gets each prompt's format as the model saw it."""
    options = GenOptions(temperature=settings.temperature, seed=settings.seed, max_tokens=settings.max_tokens)
    key = answers_key(spec, settings, cfg)
    chat = bool(settings.template)  # set exactly when some prompt renders as chat (side_settings)
    done: dict[str, str] = {}
    formats = {} if formats is None else formats
    if path.exists():
        for _, row in iter_jsonl(path):
            if isinstance(row, dict) and row.get("settings") == key:
                pid = str(row.get("prompt_id") or row["id"])
                done[pid] = row["answer"]
                if row.get("format"):
                    formats[pid] = row["format"]
    todo = [r for r in records if r.id not in done]
    if not todo:
        return done
    how = "greedy" if options.temperature == 0 else f"temperature {options.temperature}"
    t0 = time.perf_counter()
    rendered = {r.id: answer_prompt(r, cfg.prompt_format, chat) for r in todo}
    formats.update({rid: fmt for rid, (_, fmt) in rendered.items()})
    if client is not None:
        note(console, f"generating {len(todo)} answers with {spec} ({settings.runtime}, {how})")
        done.update(asyncio.run(answer_served(spec, client, todo, rendered, path, cfg, options, key, console)))
    else:
        from prefloop.llm import make_client

        note(console, f"generating {len(todo)} answers with {spec} (batch {cfg.batch_size}, {how})")
        local = make_client(spec, dtype=cfg.dtype, batch_size=cfg.batch_size)
        try:
            with JsonlAppender(path) as out, Progress(console, len(todo), f"answers ({spec})", unit="answers",
                                                      enabled=not cfg.quiet) as bar:
                for i in range(0, len(todo), cfg.batch_size):
                    batch = todo[i: i + cfg.batch_size]
                    answers = local.generate_batch([rendered[r.id][0] for r in batch], options)
                    for rec, answer in zip(batch, answers):
                        out.append({"id": rec.id, "prompt_id": rec.id, "answer": answer, "settings": key,
                                    "model": spec, "format": rendered[rec.id][1]})
                        done[rec.id] = answer
                    bar.advance(len(batch))
        finally:
            asyncio.run(local.aclose())
    note(console, f"  {len(todo)} answers in {time.perf_counter() - t0:.1f}s")
    return done


async def answer_served(spec: str, client: Any, todo: list[PromptRecord], rendered: dict[str, tuple[Prompt, str]],
                        path: Path, cfg: JudgeConfig, options: GenOptions, key: str, console: Any
                        ) -> dict[str, str]:
    """A served model's answers through the durable runner (``path`` is its output): as many in flight as the
    server has slots (all hosts together), each written as it comes. Answers that still fail after the
    client's and the runner's retries stop the judge before judging: a rerun retries only those."""
    runner = Runner(path, concurrency=getattr(client, "capacity", None) or cfg.concurrency, console=console,
                    description=f"answers ({spec})", backoff_s=0.2, job_timeout_s=cfg.job_timeout_s,
                    stall_s=cfg.stall_s, progress=False if cfg.quiet else None, unit="answers")

    async def work(job: Job) -> dict[str, Any]:
        rec = job.data
        prompt, fmt = rendered[rec.id]
        text = await client.complete(prompt, options)
        return {"prompt_id": rec.id, "answer": text.strip(), "settings": key, "model": spec, "format": fmt}

    try:
        summary = await runner.run([Job(id=stable_id(r.id, key), data=r) for r in todo], work)
    finally:
        await client.aclose()  # in this event loop, where its connections were opened
    if summary.interrupted:
        raise KeyboardInterrupt
    if not summary.done:
        raise LLMError(f"{spec}: {summary.failed} of {len(todo)} answers failed"
                       + (f" ({summary.aborted})" if summary.aborted else "")
                       + f"; reasons in {path}.failures.jsonl")
    return {row["prompt_id"]: row["answer"] for _, row in iter_jsonl(path)
            if isinstance(row, dict) and row.get("settings") == key and "prompt_id" in row}


def answer_warnings_between(policy: AnswerSettings, reference: AnswerSettings) -> list[str]:
    """Differences that do not stop the comparison but colour it: another runtime or quantization."""
    if (policy.runtime, policy.quantization) == (reference.runtime, reference.quantization):
        return []
    return [f"the policy was answered by {policy.runtime} ({policy.quantization or '?'}), the reference by "
            f"{reference.runtime} ({reference.quantization or '?'}): part of the win rate may be the runtime or "
            "the quantization, not the training; export the reference too (prefloop export REFERENCE --ollama "
            "NAME) so both sides are served alike"]


def generate_answers(cfg: JudgeConfig, records: list[PromptRecord], console: Any = None,
                     formats: dict[str, str] | None = None) -> tuple[list[AnswerRow], AnswerSettings, AnswerSettings]:
    """Both models' answers (one model at a time in memory), written to ``answers.jsonl``, and how each side's
    were made; ``formats`` gets the format each prompt reached the policy in. Refuses, before generating anything,
    two sides that would be answered differently.

    The same model twice is an A/A test: greedy, its answers are generated once and every prompt is a tie;
    sampled, the reference side gets the next seed, so the two sides are independent samples of one model and
    an honest judge should land near 50 %.
    """
    out = Path(cfg.output_dir)
    policy, reference = local_spec(cfg.policy), local_spec(cfg.reference)
    same = spec_identity(reference) == spec_identity(policy)
    clients = {s: served_client(s, cfg) for s in {policy, reference} if parse_spec(s).backend != "local"}
    try:
        pol_set = side_settings(policy, cfg, records, 0, clients.get(policy))
        ref_set = side_settings(reference, cfg, records, 1 if same else 0,
                                clients.get(reference))
        problem = pol_set.mismatch(ref_set, same_model=same)
        if problem:
            raise ValueError(f"judge: the policy and the reference would be answered differently ({problem}); "
                             "a win rate between them would measure that difference. Serve both models alike "
                             "(the same chat template: e.g. export both with prefloop export to the same Ollama)")
        pol = generate_side(policy, records, out / "gen-policy.jsonl", cfg, console, pol_set, clients.get(policy),
                            formats)
        if same and cfg.temperature == 0:
            ref = pol
        else:
            ref = generate_side(reference, records, out / "gen-reference.jsonl", cfg, console, ref_set,
                                clients.get(reference))
    finally:
        for client in clients.values():
            asyncio.run(client.aclose())
    rows = [AnswerRow(id=r.id, prompt=r.prompt, policy_answer=pol[r.id], reference_answer=ref[r.id],
                      known_good=r.known_good, policy_model=cfg.policy, reference_model=cfg.reference,
                      settings=pol_set.key()) for r in records]
    write_answers(out / "answers.jsonl", rows)
    return rows, pol_set, ref_set
