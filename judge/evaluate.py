"""``prefloop judge``: held-out win rate of a policy over its reference, from one or more swappable judges.

The recipe, in order:
1. load held-out prompts (a prompts file, or a pairs file whose chosen answers become the known-good answers);
2. generate an answer from each model with the same settings (greedy by default), in batches, each batch
   appended to ``gen-policy.jsonl`` / ``gen-reference.jsonl`` so a killed run keeps what it generated; prompts
   reach the models as the trainer renders them (``prompt_format``; a chat model gets Alpaca rows as one turn of
   its chat template), i.e. the way the model is used;
3. skill retention from the answers alone (``judge.retention``: content kept of the known-good answers, stock
   openings, loops, length), no judge needed;
4. with each judge: first its validation on pairs whose better side is known (``validate``, ``judge.validation``;
   ``validation.jsonl``), then every prompt in both orders through the durable runner (``judgments.jsonl``) and
   the judgment cache, so a rerun asks the judge nothing it already answered; the headline judge also scores both
   answers 0-100 against the known-good answer (score mode);
5. statistics (``judge.stats``) into ``results.json``; ``report.md``/``report.html`` with a plot and examples.
   The files and their types are in ``judge.results``.

A judgment that never parsed counts as a tie and is reported (``unparsed``), never dropped from n. A judge call
that failed (server down) is not a judgment: the run is ``failed`` (incomplete) and the same command resumes it.
An interrupted run writes no results: the last complete ``results.json`` stays as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.cache import JudgeCache
from judge.config import JudgeConfig
from judge.pairwise import PairVerdict, judge_pair
from judge.prompts import check_fields, judge_prompt_text, load_template
from judge.results import (Agreement, AnswerRow, Game, JudgeResults, JudgeSummary, JudgeValidation, JudgmentRow,
                           Retention, iter_judgments, write_answers)
from judge.retention import retention, retention_warnings
from judge.scoring import Score, score_many
from judge.selfpref import generator_models, self_preference_warnings
from judge.stats import (GameRecord, cohen_kappa, diagnostics, lc_win_rate, outcome_values, position_and_content,
                         summarize)
from judge.validation import summarize_validation, validation_rows
from prefloop.jsonl import JsonlAppender, iter_jsonl
from prefloop.llm.base import GenOptions, LLMError, parse_spec
from prefloop.records import Prompt, PromptRecord, stable_id
from prefloop.runner import Job, RunSummary, Runner
from prefloop.sources import iter_rows, load_preferences, load_prompts, preference_to_prompt
from prefloop.templates import choose_format, render_prompt

OUTCOME = {"A": "win", "B": "loss", "tie": "tie", None: "tie"}      # A = the policy's answer
WINNER = {"A": "policy", "B": "reference", "tie": "tie", None: None}


# ------------------------------------------------------------------------------------------------ prompts

def load_eval_prompts(cfg: JudgeConfig) -> tuple[list[PromptRecord], set[str]]:
    """Held-out prompts (first ``cfg.limit``) and the models that generated them when they are pairs."""
    if not cfg.prompts:
        raise ValueError("judge: no held-out prompts given (--prompts FILE: prompts, Alpaca JSON or pairs JSONL)")
    first = next((row for _, _, row in iter_rows(cfg.prompts)), None)
    if isinstance(first, dict) and "chosen" in first and "rejected" in first:
        pairs, _ = load_preferences(cfg.prompts)
        records = [preference_to_prompt(p) for p in pairs][: cfg.limit or None]
        return records, generator_models(pairs)
    records, _ = load_prompts(cfg.prompts, limit=cfg.limit or 0)
    return records, set()


def training_checks(cfg: JudgeConfig, records: list[PromptRecord]) -> tuple[set[str], list[str]]:
    """From the training pairs (``cfg.pairs``): the models that generated them (plus ``cfg.generator_model``),
    and a warning when held-out prompts also appear in training (then the win rate is not held-out)."""
    found = {cfg.generator_model} if cfg.generator_model else set()
    warnings = []
    if cfg.pairs:
        if not Path(cfg.pairs).exists():
            raise ValueError(f"{cfg.pairs}: no such training pairs file")
        pairs, _ = load_preferences(cfg.pairs, skip_bad=True)
        found |= generator_models(pairs)
        seen = {judge_prompt_text(p.prompt).strip() for p in pairs}
        leaked = sum(judge_prompt_text(r.prompt).strip() in seen for r in records)
        if leaked:
            warnings.append(f"{leaked} of {len(records)} evaluation prompts also appear in the training pairs "
                            f"({cfg.pairs}): the win rate is not a held-out number; evaluate on prompts the "
                            "model never trained on")
    return found, warnings


# ---------------------------------------------------------------------------------------------- answers

def local_spec(name: str) -> str:
    return name if name.startswith(("local:", "ollama:", "openai:")) else f"local:{name}"


def gen_options(cfg: JudgeConfig, seed_offset: int = 0) -> GenOptions:
    return GenOptions(temperature=cfg.temperature, seed=cfg.gen_seed + seed_offset, max_tokens=cfg.max_tokens)


def answer_settings(spec: str, options: GenOptions, cfg: JudgeConfig) -> str:
    """What decides an answer besides its prompt: the key of ``gen-*.jsonl`` rows a rerun may reuse."""
    return stable_id(spec, options.temperature, options.seed, options.max_tokens, cfg.dtype, cfg.prompt_format)


def answer_prompt(rec: PromptRecord, forced: str, has_chat_template: bool) -> tuple[Prompt, str]:
    """The prompt as the model gets it (the trainer's rendering, ``prefloop.templates``) and its format's name."""
    fmt = choose_format(rec.prompt_format, forced, has_chat_template)
    return render_prompt(rec.prompt, rec.meta, rec.prompt_format, fmt), fmt


def generate_side(spec: str, records: list[PromptRecord], path: Path, cfg: JudgeConfig, console: Any,
                  seed_offset: int = 0, formats: dict[str, str] | None = None) -> dict[str, str]:
    """Answers of one model for every record, resuming from ``path`` (rows keyed by prompt id + settings);
    ``formats`` gets each prompt's format as the model saw it."""
    options = gen_options(cfg, seed_offset)
    settings = answer_settings(spec, options, cfg)
    done: dict[str, str] = {}
    formats = {} if formats is None else formats
    if path.exists():
        for _, row in iter_jsonl(path):
            if isinstance(row, dict) and row.get("settings") == settings:
                done[str(row["id"])] = row["answer"]
                if row.get("format"):
                    formats[str(row["id"])] = row["format"]
    todo = [r for r in records if r.id not in done]
    if not todo:
        return done
    from prefloop.llm import make_client

    if parse_spec(spec).backend != "local":
        raise ValueError(f"{spec}: answers are generated with a local model (a folder, .gguf or smollm2)")
    note(console, f"generating {len(todo)} answers with {spec} (batch {cfg.batch_size}, "
                  f"{'greedy' if options.temperature == 0 else f'temperature {options.temperature}'})")
    client = make_client(spec, dtype=cfg.dtype, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    try:
        chat = bool(getattr(client.load()[1], "chat_template", None))
        with JsonlAppender(path) as out:
            for i in range(0, len(todo), cfg.batch_size):
                batch = todo[i: i + cfg.batch_size]
                rendered = [answer_prompt(r, cfg.prompt_format, chat) for r in batch]
                answers = client.generate_batch([prompt for prompt, _ in rendered], options)
                for rec, answer, (_, fmt) in zip(batch, answers, rendered):
                    out.append({"id": rec.id, "answer": answer, "settings": settings, "model": spec, "format": fmt})
                    done[rec.id] = answer
                    formats[rec.id] = fmt
    finally:
        asyncio.run(client.aclose())
    note(console, f"  {len(todo)} answers in {time.perf_counter() - t0:.1f}s")
    return done


def generate_answers(cfg: JudgeConfig, records: list[PromptRecord], console: Any = None,
                     formats: dict[str, str] | None = None) -> list[AnswerRow]:
    """Both models' answers (one model at a time in memory), written to ``answers.jsonl``; ``formats`` gets the
    format each prompt reached the policy in.

    The same model twice is an A/A test: greedy, its answers are generated once and every prompt is a tie;
    sampled, the reference side gets the next seed, so the two sides are independent samples of one model and
    an honest judge should land near 50 %.
    """
    out = Path(cfg.output_dir)
    policy, reference = local_spec(cfg.policy), local_spec(cfg.reference)
    pol = generate_side(policy, records, out / "gen-policy.jsonl", cfg, console, formats=formats)
    if reference == policy and cfg.temperature == 0:
        ref = pol
    else:
        ref = generate_side(reference, records, out / "gen-reference.jsonl", cfg, console,
                            seed_offset=1 if reference == policy else 0)
    rows = [AnswerRow(id=r.id, prompt=r.prompt, policy_answer=pol[r.id], reference_answer=ref[r.id],
                      known_good=r.known_good, policy_model=cfg.policy, reference_model=cfg.reference)
            for r in records]
    write_answers(out / "answers.jsonl", rows)
    return rows


# ---------------------------------------------------------------------------------------------- judging

def judgment_row(row: AnswerRow, judge: str, verdict: PairVerdict | None) -> JudgmentRow:
    """One judgments.jsonl line: the verdict from the policy's side plus both games by content."""
    base = dict(judge=judge, prompt_id=row.id, len_policy=len(row.policy_answer),
                len_reference=len(row.reference_answer), answers=row.key)
    if verdict is None:  # identical answers, not sent to the judge
        return JudgmentRow(outcome="tie", winner="tie", identical=True, **base)
    games = [Game(first=WINNER[g.first], pick=WINNER[g.pick], shown=g.shown, reason=g.reason, raw=g.raw,
                  attempts=g.attempts, cached=g.cached, logodds=g.logodds) for g in verdict.games]
    odds = {g.first: g.logodds for g in verdict.games}
    position = content = None
    if odds.get("A") is not None and odds.get("B") is not None:  # L1: the policy shown first; L2: shown second
        position, content = position_and_content(odds["A"], odds["B"])
    return JudgmentRow(outcome=OUTCOME[verdict.winner], winner=WINNER[verdict.winner], consistent=verdict.consistent,
                       unparsed=verdict.unparsed, games=games, position=position, content=content, **base)


def verdict_client(cfg: JudgeConfig, judge: str, client: Any) -> Any:
    """The judge as asked: a local judge reads its verdict from token probabilities unless told to generate."""
    local = parse_spec(judge).backend == "local"
    if cfg.verdict == "logprob" and not local:
        raise ValueError(f"verdict = logprob needs a local: judge, not {judge}")
    if client is None:
        return None
    if cfg.verdict == "logprob" or (cfg.verdict == "auto" and local):
        from judge.logprob import LogprobJudge

        return LogprobJudge(client)
    return client


def judge_client(cfg: JudgeConfig, judge: str) -> Any:
    """A judge client from its spec as it replies (a served one with ``concurrency`` slots and the judge's
    timeout), before ``verdict_client`` decides how its verdicts are read."""
    from prefloop.llm import make_client

    served = parse_spec(judge).backend != "local"
    return make_client(judge, slots=cfg.concurrency, timeout=cfg.timeout_s) if served else make_client(judge)


def make_judge(cfg: JudgeConfig, judge: str) -> Any:
    """A judge client from its spec, reading verdicts as ``cfg.verdict`` says."""
    return verdict_client(cfg, judge, judge_client(cfg, judge))


def judge_options(cfg: JudgeConfig) -> GenOptions:
    return GenOptions(temperature=cfg.judge_temperature, seed=cfg.judge_seed, max_tokens=cfg.judge_max_tokens,
                      num_ctx=cfg.judge_num_ctx)


async def judge_all(cfg: JudgeConfig, judge: str, answers: list[AnswerRow], cache: JudgeCache,
                    console: Any = None, client: Any = None, *, file: str = "judgments.jsonl",
                    what: str = "judging") -> tuple[dict[str, JudgmentRow], RunSummary]:
    """Judge every answer pair with one judge through the runner into ``file`` (the validation pairs go through
    the same path into ``validation.jsonl``); returns rows by prompt id and the summary."""
    template = load_template(cfg.template)
    check_fields(template, ("prompt", "answer_a", "answer_b"))
    options = judge_options(cfg)
    own = client is None
    client = make_judge(cfg, judge) if own else verdict_client(cfg, judge, client)
    jobs = []
    for row in answers:
        known_good = row.known_good if cfg.show_known_good else None
        jid = stable_id(judge, template.hash, row.id, row.policy_answer, row.reference_answer, known_good,
                        options.temperature, options.seed, options.max_tokens)
        jobs.append(Job(id=jid, data=(row, known_good)))

    async def work(job: Job) -> dict[str, Any]:
        row, known_good = job.data
        if not cfg.judge_identical and row.policy_answer.strip() == row.reference_answer.strip():
            return judgment_row(row, judge, None).to_json()
        verdict = await judge_pair(client, row.prompt, row.policy_answer, row.reference_answer,
                                   known_good=known_good, cache=cache, template=template, options=options,
                                   attempts=cfg.attempts)
        return judgment_row(row, judge, verdict).to_json()

    path = Path(cfg.output_dir) / file
    try:
        if own:
            await client.preflight()
        runner = Runner(path, concurrency=cfg.concurrency, console=console, description=f"{what} ({judge})",
                        backoff_s=0.2, progress=False if cfg.quiet else None)
        summary = await runner.run(jobs, work)
    finally:
        if own:
            await client.aclose()
    wanted = {j.id for j in jobs}
    rows = {r.prompt_id: r for r in iter_judgments(path) if r.id in wanted}
    return rows, summary


@dataclass
class Judged:
    """What the judges said: per judge its rows by prompt id and the runner's summary, for the held-out answers
    and for the validation pairs; the headline judge's 0-100 scores; the adversarial check."""

    rows: dict[str, dict[str, JudgmentRow]] = field(default_factory=dict)
    summaries: dict[str, RunSummary] = field(default_factory=dict)
    validation: dict[str, dict[str, JudgmentRow]] = field(default_factory=dict)
    validation_summaries: dict[str, RunSummary] = field(default_factory=dict)
    scores: tuple[list[Score], list[Score]] | None = None
    score_error: str = ""
    robustness: dict[str, Any] | None = None

    @property
    def interrupted(self) -> bool:
        return any(s.interrupted for s in [*self.summaries.values(), *self.validation_summaries.values()])


async def judge_phase(cfg: JudgeConfig, answers: list[AnswerRow], clients: dict[str, Any], console: Any,
                      validation: list[AnswerRow] | None = None) -> Judged:
    """Every judge (its validation pairs first), then the headline judge's scores and the optional adversarial
    check, in one event loop (clients are bound to the loop that first used them)."""
    out = Judged()
    with JudgeCache(cfg.cache_path) as cache:
        for judge in cfg.judges:
            if validation:
                out.validation[judge], out.validation_summaries[judge] = await judge_all(
                    cfg, judge, validation, cache, console, clients.get(judge), file="validation.jsonl",
                    what="validating")
                if out.interrupted:
                    return out
            out.rows[judge], out.summaries[judge] = await judge_all(cfg, judge, answers, cache, console,
                                                                    clients.get(judge))
            if out.interrupted:
                return out
        complete = all(s.done for s in out.summaries.values())
        if cfg.score_known_good and complete and any(a.known_good for a in answers):
            try:
                out.scores = await score_both(cfg, answers, cache, clients.get(cfg.judges[0]))
            except LLMError as exc:  # the verdicts stand without the scores; finished scores are cached
                out.score_error = f"{cfg.judges[0]}: no 0-100 scores this run ({exc}); a rerun asks again"
    if cfg.adversarial and answers:
        out.robustness = await adversarial_check(cfg, answers[: cfg.adversarial], clients.get(cfg.judges[0]))
    return out


async def score_both(cfg: JudgeConfig, answers: list[AnswerRow], cache: JudgeCache, client: Any = None
                     ) -> tuple[list[Score], list[Score]]:
    """The seed's 0-100 correctness score of both models' answers against the known-good answer, by the headline
    judge generating its reply (a local judge too: a score is not one of its verdict tokens)."""
    own = client is None
    client = judge_client(cfg, cfg.judges[0]) if own else client
    items = [a for a in answers if a.known_good]
    try:
        if own:
            await client.preflight()
        kw = dict(cache=cache, options=cfg.score_options(), attempts=cfg.attempts)
        policy = await score_many(client, [(a.prompt, a.policy_answer, a.known_good) for a in items], **kw)
        reference = await score_many(client, [(a.prompt, a.reference_answer, a.known_good) for a in items], **kw)
    finally:
        if own:
            await client.aclose()
    return policy, reference


async def adversarial_check(cfg: JudgeConfig, rows: list[AnswerRow], client: Any = None) -> dict[str, Any]:
    """Flip rates of the headline judge when the reference answer is edited adversarially (judge.robustness)."""
    from judge.robustness import flip_rates

    own = client is None
    client = make_judge(cfg, cfg.judges[0]) if own else verdict_client(cfg, cfg.judges[0], client)
    items = [(r.prompt, r.policy_answer, r.reference_answer) for r in rows]
    known = [r.known_good if cfg.show_known_good else None for r in rows]
    try:
        with JudgeCache(cfg.cache_path) as cache:
            out = await flip_rates(client, items, cache=cache, known_good=known, template=load_template(cfg.template),
                                   options=judge_options(cfg), attempts=cfg.attempts)
    finally:
        if own:
            await client.aclose()
    out["judge"] = cfg.judges[0]
    return out


# -------------------------------------------------------------------------------------------- statistics

def judge_summary(judge: str, rows: list[JudgmentRow], cfg: JudgeConfig,
                  validation: JudgeValidation | None = None) -> JudgeSummary:
    """Win rate, interval, LC win rate and diagnostics of one judge's rows (one per prompt), its verdicts decided
    by the rule its validation chose (``orders`` without one)."""
    rule = validation.rule if validation is not None else "orders"
    if not rows:
        return JudgeSummary(judge=judge, rule=rule, validation=validation)
    outcomes = [r.decided(rule) for r in rows]
    s = summarize(outcomes, n_boot=cfg.n_boot, seed=cfg.bootstrap_seed)
    lc = lc_win_rate(outcome_values(outcomes), [r.len_policy for r in rows], [r.len_reference for r in rows])
    letter = {"policy": "A", "reference": "B", "tie": "tie", None: None}
    games = [GameRecord(r.prompt_id, first=letter[g.first], pick=letter[g.pick], len_a=r.len_policy,
                        len_b=r.len_reference) for r in rows for g in r.games]
    diag = diagnostics(games)
    diag.update(
        unparsed=sum(r.unparsed for r in rows),
        inconsistent=sum(r.consistent is False for r in rows),
        identical_answers=sum(r.identical for r in rows),
        judged_prompts=sum(not r.identical for r in rows),
        calls=sum(g.attempts for r in rows for g in r.games),
        cached_games=sum(g.cached for r in rows for g in r.games),
        mean_len_policy=sum(r.len_policy for r in rows) / len(rows),
        mean_len_reference=sum(r.len_reference for r in rows) / len(rows),
    )
    positions = [r.position for r in rows if r.position is not None]
    if positions:
        diag["mean_position"] = sum(positions) / len(positions)
    return JudgeSummary(judge=judge, n=s.n, win_rate=s.rate, ci_low=s.ci_low, ci_high=s.ci_high, wins=s.wins,
                        ties=s.ties, losses=s.losses, lc_win_rate=lc.rate, lc_slope=lc.slope, lc_warning=lc.warning,
                        diagnostics=diag, rule=rule, validation=validation)


def kappas(per_judge: dict[str, dict[str, JudgmentRow]]) -> list[Agreement]:
    """Cohen's κ for every pair of judges over the prompts both judged (labels: win/tie/loss/unparsed)."""
    names = list(per_judge)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(per_judge[a]) & set(per_judge[b]))
            la = [per_judge[a][k].label for k in common]
            lb = [per_judge[b][k].label for k in common]
            agree = sum(x == y for x, y in zip(la, lb)) / len(common) if common else None
            out.append(Agreement(a=a, b=b, kappa=cohen_kappa(la, lb) if common else None, agreement=agree,
                                 n=len(common)))
    return out


def judge_warnings(s: JudgeSummary) -> list[str]:
    """What makes one judge's win rate hard to believe, in words."""
    out = []
    diag = s.diagnostics
    if diag.get("unparsed"):
        out.append(f"{s.judge}: {diag['unparsed']} of {s.n} prompts had a judgment that never parsed; they count "
                   "as ties")
    if diag.get("parse_rate") is not None and diag["parse_rate"] < 0.9:
        out.append(f"{s.judge}: only {diag['parse_rate']:.0%} of judge replies parsed; the win rate says little "
                   "with this judge")
    if diag.get("position_consistency") is not None and diag["position_consistency"] < 0.5:
        out.append(f"{s.judge}: only {diag['position_consistency']:.0%} of prompts got the same verdict in both "
                   f"orders (it picks the first answer {diag.get('first_position_rate') or 0:.0%} of the time): "
                   "this judge decides by position; its inconsistent verdicts are ties")
    if s.lc_warning:
        out.append(f"{s.judge}: {s.lc_warning}")
    return out


# ------------------------------------------------------------------------------------------------- main

def add_scores(skill: Retention, judge: str, policy: list[Score], reference: list[Score]) -> None:
    """The mean 0-100 scores of both sides into the retention record (unparsed scores left out, as counted)."""
    for side, scores in ((skill.policy, policy), (skill.reference, reference)):
        values = [s.value for s in scores if s.value is not None]
        side.score = sum(values) / len(values) if values else None
    skill.scored_by = judge


def note(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)


def evaluate(cfg: JudgeConfig, console: Any = None, *, clients: dict[str, Any] | None = None) -> JudgeResults:
    """Generate, judge, compute and report (see the module docstring). ``clients`` may supply already-built
    judge clients by spec (tests, the loop); otherwise each judge is built from its spec."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for judge in cfg.judges:  # refuse a bad judge setting before spending time on answers
        verdict_client(cfg, judge, None)
    records, pair_gens = load_eval_prompts(cfg)
    train_gens, warnings = training_checks(cfg, records)
    warnings += self_preference_warnings(cfg.judges, pair_gens | train_gens)
    warnings += self_preference_warnings(cfg.judges, {cfg.policy, cfg.reference},
                                         role="one of the models being compared")
    for w in warnings:
        note(console, f"[yellow]warning:[/] {w}")
    validation = validation_rows(cfg.validate) if cfg.validate else []
    formats: dict[str, str] = {}
    answers = generate_answers(cfg, records, console, formats)
    skill = retention(answers, n_boot=cfg.n_boot, seed=cfg.bootstrap_seed)
    warnings += retention_warnings(skill)

    judged = asyncio.run(judge_phase(cfg, answers, clients or {}, console, validation))
    per_judge_rows, summaries, robustness = judged.rows, judged.summaries, judged.robustness
    outputs = {"answers": str(out / "answers.jsonl"), "judgments": str(out / "judgments.jsonl")}
    if validation:
        outputs["validation"] = str(out / "validation.jsonl")
    if judged.interrupted:
        return JudgeResults(status="interrupted", reason="interrupted; run the same command again to resume",
                            outputs=outputs, judge=cfg.judges[0], policy=cfg.policy, reference=cfg.reference)

    per_judge = {}
    for judge in cfg.judges:
        checked = None
        if validation:
            done = judged.validation[judge]
            checked = summarize_validation(judge, str(cfg.validate),
                                           [done[v.id] for v in validation if v.id in done], n_boot=cfg.n_boot,
                                           seed=cfg.bootstrap_seed)
        ordered = [per_judge_rows[judge][a.id] for a in answers if a.id in per_judge_rows[judge]]
        per_judge[judge] = judge_summary(judge, ordered, cfg, checked)
        per_judge[judge].run = summaries[judge].to_json()
        warnings += judge_warnings(per_judge[judge])
    if judged.scores is not None:
        add_scores(skill, cfg.judges[0], *judged.scores)
    if judged.score_error:
        warnings.append(judged.score_error)
    missing = {j: len(answers) - len(per_judge_rows[j]) for j in cfg.judges}
    missing.update({f"{j} (validation)": len(validation) - len(judged.validation.get(j, {}))
                    for j in cfg.judges if validation})
    reason = ""
    runs = [*summaries.values(), *judged.validation_summaries.values()]
    if any(missing.values()) or not all(s.done for s in runs):
        reason = ("incomplete: " + ", ".join(f"{j} lacks {n} judgments" for j, n in missing.items() if n)
                  + f" (reasons in {out / 'judgments.jsonl.failures.jsonl'}); run the same command again to resume "
                    "from the cache")
        warnings.append(reason)
    if robustness is not None:
        for name in ("injection", "longer", "empty"):
            if robustness[name]["attacked_wins"] > 0.2:
                warnings.append(f"{cfg.judges[0]}: an answer edited by '{name}' won "
                                f"{robustness[name]['attacked_wins']:.0%} of {robustness['n']} pairs; "
                                "this judge is easy to game")

    results = JudgeResults(
        status="failed" if reason else "complete", reason=reason, outputs=outputs, judge=cfg.judges[0],
        judges=per_judge, kappa=kappas(per_judge_rows) if len(cfg.judges) > 1 else [], warnings=warnings,
        policy=cfg.policy, reference=cfg.reference, prompts=cfg.prompts, n_prompts=len(answers), n_boot=cfg.n_boot,
        robustness=robustness, template=cfg.template, template_hash=load_template(cfg.template).hash,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), retention=skill,
        validated_on=str(cfg.validate or ""), answer_formats=dict(Counter(formats.values())))
    results.outputs.update(results=str(out / "results.json"), report=str(out / "report.html"))
    results.write(out / "results.json")
    from judge.report import write_report

    write_report(out, results, answers, per_judge_rows, cfg.examples)
    return results
