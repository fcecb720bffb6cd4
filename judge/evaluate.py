"""``prefloop judge``: held-out win rate of a policy over its reference, from one or more swappable judges.

The recipe, in order:
1. load held-out prompts (a prompts file, or a pairs file whose chosen answers become the known-good answers);
2. generate an answer from each model with the same settings (greedy by default), each appended to
   ``gen-policy.jsonl`` / ``gen-reference.jsonl`` as it comes so a killed run keeps what it generated: a local
   model in batches in this process, a served one (``ollama:NAME``, ``openai:NAME@URL``, e.g. the trained model
   after ``prefloop export``) through the durable runner with the server's slots in flight. Prompts reach the
   models as the trainer renders them (``prompt_format``; a chat model gets Alpaca rows as one turn of its chat
   template): the way the model is used. The settings of each side are recorded (``AnswerSettings``) and two
   sides made differently are refused;
3. skill retention from the answers alone (``judge.retention``: content kept of the known-good answers, stock
   openings, loops, length), no judge needed;
4. with each judge: first its validation on pairs whose better side is known (``validate``, ``judge.validation``;
   ``validation.jsonl``), then every prompt in both orders through the durable runner (``judgments.jsonl``) and
   the judgment cache, so a rerun asks the judge nothing it already answered; the headline judge also scores both
   answers 0-100 against the known-good answer (score mode); a person judges on the labelling screen;
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

from judge.answers import answer_warnings_between, generate_answers, note
from judge.cache import JudgeCache
from judge.config import JudgeConfig, is_human
from judge.human import calibrations, judge_human
from judge.pairwise import PairVerdict, judge_pair
from judge.prompts import check_fields, judge_prompt_text, load_template
from judge.results import (Agreement, AnswerRow, Game, JudgeResults, JudgeSummary, JudgeValidation, JudgmentRow,
                           Retention, iter_judgments)
from judge.retention import retention, retention_warnings
from judge.robustness import ATTACKS
from judge.scoring import Score, score_many
from judge.selfpref import generator_models, self_preference_warnings
from judge.stats import (GameRecord, cohen_kappa, diagnostics, lc_win_rate, outcome_values, position_and_content,
                         summarize)
from judge.validation import order_flips, summarize_validation, validation_rows
from prefloop.files import writable
from prefloop.llm.base import GenOptions, LLMError, parse_spec
from prefloop.records import PromptRecord, stable_id
from prefloop.runner import Job, RunSummary, Runner
from prefloop.sources import iter_rows, load_preferences, load_prompts, preference_to_prompt

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


# ---------------------------------------------------------------------------------------------- judging

def judgment_row(row: AnswerRow, judge: str, verdict: PairVerdict | None) -> JudgmentRow:
    """One judgments.jsonl line: the verdict from the policy's side plus both games by content."""
    if verdict is None:  # identical answers, not sent to the judge
        return JudgmentRow.of(row, judge, outcome="tie", winner="tie", identical=True)
    games = [Game(first=WINNER[g.first], pick=WINNER[g.pick], shown=g.shown, reason=g.reason, raw=g.raw,
                     attempts=g.attempts, cached=g.cached, logodds=g.logodds) for g in verdict.games]
    odds = {g.first: g.logodds for g in verdict.games}
    position = content = None
    if odds.get("A") is not None and odds.get("B") is not None:  # L1: the policy shown first; L2: shown second
        position, content = position_and_content(odds["A"], odds["B"])
    return JudgmentRow.of(row, judge, outcome=OUTCOME[verdict.winner], winner=WINNER[verdict.winner],
                          consistent=verdict.consistent, unparsed=verdict.unparsed, games=games, position=position,
                          content=content)


def verdict_client(cfg: JudgeConfig, judge: str, client: Any) -> Any:
    """The judge as asked: a python: or reward: judge gives its verdict directly; otherwise, unless told to
    generate, a local judge reads its verdict from token probabilities and a served one (``ollama:``, ``openai:``)
    sends its verdict's token log-probabilities along (``judge.logprob``)."""
    spec = parse_spec(judge)
    backend = spec.backend
    if not spec.chat:  # a python: or reward: judge gives its verdict directly (judge.kinds)
        return client
    if cfg.verdict == "logprob" and backend not in ("local", "ollama", "openai"):
        raise ValueError(f"verdict = logprob needs a local:, ollama: or openai: judge, not {judge}")
    if client is None or cfg.verdict == "generate":
        return client
    if backend == "local":
        from judge.logprob import LogprobJudge

        return LogprobJudge(client)
    if backend in ("ollama", "openai"):
        from judge.logprob import ServedLogprobJudge

        return ServedLogprobJudge(client)
    return client


def judge_client(cfg: JudgeConfig, judge: str) -> Any:
    """A judge client from its spec as it replies (a served one with ``concurrency`` slots and the judge's
    timeout), before ``verdict_client`` decides how its verdicts are read."""
    from prefloop.llm import make_client

    if not parse_spec(judge).chat:
        from judge.kinds import make_direct

        return make_direct(judge)
    served = parse_spec(judge).backend != "local"
    return make_client(judge, slots=cfg.concurrency, timeout=cfg.timeout_s) if served else make_client(judge)


def make_judge(cfg: JudgeConfig, judge: str) -> Any:
    """A judge client from its spec, reading verdicts as ``cfg.verdict`` says."""
    return verdict_client(cfg, judge, judge_client(cfg, judge))


async def check_served_judges(cfg: JudgeConfig, clients: dict[str, Any]) -> None:
    """Each served judge answers and has its model (its client's preflight), before any answer is generated:
    a judge model not pulled is said at the start, not after every answer."""
    for judge in model_judges(cfg):
        if judge in clients or parse_spec(judge).backend == "local":
            continue
        client = judge_client(cfg, judge)
        try:
            await client.preflight()
        finally:
            await client.aclose()


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
                        backoff_s=0.2, job_timeout_s=cfg.job_timeout_s, stall_s=cfg.stall_s,
                        progress=False if cfg.quiet else None,
                        redo=lambda rec: bool(rec.get("unparsed")))  # an outage's verdicts are asked again
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
            if is_human(judge):  # a person on the labelling screen (``clients`` may hold how to run it)
                out.rows[judge], out.summaries[judge] = await judge_human(cfg, judge, answers, console,
                                                                          clients.get(judge))
                if out.interrupted:
                    return out
                continue
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
        models = model_judges(cfg)
        complete = all(s.done for s in out.summaries.values())
        if cfg.score_known_good and complete and models and parse_spec(models[0]).chat \
                and any(a.known_good for a in answers):  # a 0-100 score against the known-good answer
            try:
                out.scores = await score_both(cfg, models[0], answers, cache, clients.get(models[0]))
            except LLMError as exc:  # the verdicts stand without the scores; finished scores are cached
                out.score_error = f"{models[0]}: no 0-100 scores this run ({exc}); a rerun asks again"
    if cfg.adversarial and answers and models:
        out.robustness = await adversarial_check(cfg, answers[: cfg.adversarial], clients.get(models[0]))
    return out


async def score_both(cfg: JudgeConfig, judge: str, answers: list[AnswerRow], cache: JudgeCache, client: Any = None
                     ) -> tuple[list[Score], list[Score]]:
    """The seed's 0-100 correctness score of both models' answers against the known-good answer, by the first
    model judge (a local one reads it from its token probabilities unless ``verdict = "generate"``)."""
    from judge.logprob import scoring_client

    own = client is None
    client = scoring_client(judge, judge_client(cfg, judge) if own else client, cfg.verdict)
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


def model_judges(cfg: JudgeConfig) -> list[str]:
    """The judges that are models (not a person), in their order."""
    return [j for j in cfg.judges if not is_human(j)]


async def adversarial_check(cfg: JudgeConfig, rows: list[AnswerRow], client: Any = None) -> dict[str, Any]:
    """Flip rates of the first model judge when the reference answer is edited adversarially (judge.robustness)."""
    from judge.robustness import flip_rates

    judge = model_judges(cfg)[0]
    own = client is None
    client = make_judge(cfg, judge) if own else verdict_client(cfg, judge, client)
    items = [(r.prompt, r.policy_answer, r.reference_answer) for r in rows]
    known = [r.known_good if cfg.show_known_good else None for r in rows]
    try:
        with JudgeCache(cfg.cache_path) as cache:
            out = await flip_rates(client, items, cache=cache, known_good=known, template=load_template(cfg.template),
                                   options=judge_options(cfg), attempts=cfg.attempts)
    finally:
        if own:
            await client.aclose()
    out["judge"] = judge
    return out


# -------------------------------------------------------------------------------------------- statistics

def judge_summary(judge: str, rows: list[JudgmentRow], cfg: JudgeConfig,
                  validation: JudgeValidation | None = None) -> JudgeSummary:
    """Win rate, interval, LC win rate and diagnostics of one judge's rows (one per prompt; prompts a person
    skipped are left out and counted), its verdicts decided by the rule its validation chose (``orders``
    without one)."""
    rule = validation.rule if validation is not None else "orders"
    skipped = sum(r.skipped for r in rows)
    rows = [r for r in rows if not r.skipped]
    if not rows:
        return JudgeSummary(judge=judge, rule=rule, validation=validation,
                            diagnostics={"skipped": skipped} if skipped else {})
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
        skipped=skipped,
        **order_flips(rows),
    )
    positions = [r.position for r in rows if r.position is not None]
    if positions:
        diag["mean_position"] = sum(positions) / len(positions)
    return JudgeSummary(judge=judge, n=s.n, win_rate=s.rate, ci_low=s.ci_low, ci_high=s.ci_high, wins=s.wins,
                        ties=s.ties, losses=s.losses, lc_win_rate=lc.rate, lc_slope=lc.slope, lc_warning=lc.warning,
                        diagnostics=diag, rule=rule, validation=validation)


def kappas(per_judge: dict[str, dict[str, JudgmentRow]]) -> list[Agreement]:
    """Cohen's κ for every pair of judges over the prompts both judged (labels: win/tie/loss/unparsed; a
    person's skipped prompts are not judged)."""
    names = list(per_judge)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(k for k in set(per_judge[a]) & set(per_judge[b])
                            if not per_judge[a][k].skipped and not per_judge[b][k].skipped)
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


def evaluate(cfg: JudgeConfig, console: Any = None, *, clients: dict[str, Any] | None = None) -> JudgeResults:
    """Generate, judge, compute and report (see the module docstring). ``clients`` may supply already-built
    judge clients by spec (tests, the loop); otherwise each judge is built from its spec."""
    out = Path(cfg.output_dir)
    writable(out / "results.json", "--output")
    for judge in model_judges(cfg):  # refuse a bad judge setting before spending time on answers
        verdict_client(cfg, judge, None)
    records, pair_gens = load_eval_prompts(cfg)
    train_gens, warnings = training_checks(cfg, records)
    warnings += self_preference_warnings(model_judges(cfg), pair_gens | train_gens)
    warnings += self_preference_warnings(model_judges(cfg), {cfg.policy, cfg.reference},
                                         role="one of the models being compared")
    for w in warnings:
        note(console, f"[yellow]warning:[/] {w}")
    validation = validation_rows(cfg.validate) if cfg.validate else []
    check_fields(load_template(cfg.template), ("prompt", "answer_a", "answer_b"))  # before minutes of answers
    asyncio.run(check_served_judges(cfg, clients or {}))
    formats: dict[str, str] = {}
    answers, policy_answers, reference_answers = generate_answers(cfg, records, console, formats)
    warnings += answer_warnings_between(policy_answers, reference_answers)
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
        if validation and not is_human(judge):  # a person is the taste being measured, not measured here
            done = judged.validation[judge]
            checked = summarize_validation(judge, str(cfg.validate),
                                           [done[v.id] for v in validation if v.id in done], n_boot=cfg.n_boot,
                                           seed=cfg.bootstrap_seed)
        ordered = [per_judge_rows[judge][a.id] for a in answers if a.id in per_judge_rows[judge]]
        per_judge[judge] = judge_summary(judge, ordered, cfg, checked)
        per_judge[judge].run = summaries[judge].to_json()
        warnings += judge_warnings(per_judge[judge])
    if judged.scores is not None:
        add_scores(skill, model_judges(cfg)[0], *judged.scores)
    if judged.score_error:
        warnings.append(judged.score_error)
    missing = {j: len(answers) - len(per_judge_rows[j]) for j in cfg.judges}
    missing.update({f"{j} (validation)": len(validation) - len(judged.validation.get(j, {}))
                    for j in model_judges(cfg) if validation})
    reasons = []
    runs = [*summaries.values(), *judged.validation_summaries.values()]
    if any(missing.values()) or not all(s.done for s in runs):
        reasons.append("incomplete: " + ", ".join(f"{j} lacks {n} judgments" for j, n in missing.items() if n)
                       + f" (reasons in {out / 'judgments.jsonl.failures.jsonl'}); run the same command again to "
                         "resume from the cache")
    for s in per_judge.values():
        rate = s.diagnostics.get("parse_rate")
        if rate is not None and rate < cfg.min_parse_rate:
            reasons.append(f"{s.judge}: only {rate:.0%} of its replies parsed (min_parse_rate "
                           f"{cfg.min_parse_rate:.0%}): its win rate is mostly ties it never gave; use a judge that "
                           "answers in the asked-for JSON, or raise attempts")
    warnings += reasons
    reason = "; ".join(reasons)
    if robustness is not None:
        for name in ATTACKS:
            if robustness[name]["attacked_wins"] > 0.2:
                warnings.append(f"{robustness['judge']}: an answer edited by '{name}' won "
                                f"{robustness[name]['attacked_wins']:.0%} of {robustness['n']} pairs; "
                                "this judge is easy to game")

    agreement = kappas(per_judge_rows) if len(cfg.judges) > 1 else []
    results = JudgeResults(
        status="failed" if reason else "complete", reason=reason, outputs=outputs, judge=cfg.judges[0],
        judges=per_judge, kappa=agreement, calibration=calibrations(per_judge_rows, agreement), warnings=warnings,
        policy=cfg.policy, reference=cfg.reference, prompts=cfg.prompts, n_prompts=len(answers), n_boot=cfg.n_boot,
        robustness=robustness, template=cfg.template, template_hash=load_template(cfg.template).hash,
        policy_answers=policy_answers, reference_answers=reference_answers,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), retention=skill,
        validated_on=str(cfg.validate or ""), answer_formats=dict(Counter(formats.values())))
    results.outputs.update(results=str(out / "results.json"), report=str(out / "report.html"))
    results.write(out / "results.json")
    from judge.report import write_report

    write_report(out, results, answers, per_judge_rows, cfg.examples)
    return results
