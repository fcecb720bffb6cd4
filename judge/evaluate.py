"""``prefloop judge``: held-out win rate of a policy over its reference, from one or more swappable judges.

The recipe, in order:
1. load held-out prompts (a prompts file, or a pairs file whose chosen answers become the judge's references);
2. generate an answer from each model with the same settings (greedy by default), in batches, each batch
   appended to ``gen-policy.jsonl`` / ``gen-reference.jsonl`` so a killed run keeps what it generated;
3. judge every prompt in both orders with each judge through the durable runner (``judgments.jsonl``) and the
   judgment cache, so a rerun asks the judge nothing it already answered;
4. statistics (``judge.stats``) into ``results.json``; ``report.md``/``report.html`` with a plot and examples.

A judgment that never parsed counts as a tie and is reported (``unparsed``), never dropped from n. A judge call
that failed (server down) is not a judgment: the run is marked incomplete and the same command resumes it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.cache import JudgeCache
from judge.config import JudgeConfig
from judge.core import Bounded
from judge.pairwise import PairVerdict, judge_pair
from judge.prompts import check_fields, judge_prompt_text, load_template
from judge.selfpref import generator_models, self_preference_warnings
from judge.stats import GameRecord, cohen_kappa, diagnostics, lc_win_rate, outcome_values, summarize
from prefloop.jsonl import JsonlAppender, iter_jsonl, write_jsonl
from prefloop.llm.base import GenOptions, parse_spec
from prefloop.records import PromptRecord, stable_id
from prefloop.runner import Job, Runner
from prefloop.sources import iter_rows, load_preferences, load_prompts, preference_to_prompt

OUTCOME = {"A": "win", "B": "loss", "tie": "tie", None: "tie"}   # A = policy


@dataclass
class EvalResult:
    """What ``evaluate`` wrote and found. ``results`` is the content of ``results.json``."""

    out_dir: Path
    results: dict[str, Any]
    complete: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def win_rate(self) -> float:
        return self.results["win_rate"]


# ------------------------------------------------------------------------------------------------ prompts

def load_eval_prompts(cfg: JudgeConfig) -> tuple[list[PromptRecord], set[str]]:
    """Held-out prompts (first ``cfg.limit``) and the models that generated them when they are pairs."""
    if not cfg.prompts:
        raise ValueError("judge: no held-out prompts given (--prompts FILE: prompts, Alpaca JSON or pairs JSONL)")
    first = next((row for _, _, row in iter_rows(cfg.prompts)), None)
    if isinstance(first, dict) and "chosen" in first and "rejected" in first:
        pairs, _ = load_preferences(cfg.prompts)
        records = [preference_to_prompt(p) for p in pairs]
        gens = generator_models(pairs)
    else:
        records, _ = load_prompts(cfg.prompts)
        gens = set()
    if cfg.limit:
        records = records[: cfg.limit]
    if not records:
        raise ValueError(f"{cfg.prompts}: no prompts to evaluate on")
    return records, gens


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


def gen_options(cfg: JudgeConfig) -> GenOptions:
    return GenOptions(temperature=cfg.temperature, seed=cfg.gen_seed, max_tokens=cfg.max_new_tokens)


def generate_side(spec: str, records: list[PromptRecord], path: Path, cfg: JudgeConfig, console: Any,
                  seed_offset: int = 0) -> dict[str, str]:
    """Answers of one model for every record, resuming from ``path`` (rows keyed by prompt id + settings)."""
    options = gen_options(cfg)
    if seed_offset and options.seed is not None:
        options = GenOptions(temperature=options.temperature, seed=options.seed + seed_offset,
                             max_tokens=options.max_tokens)
    settings = stable_id(spec, options.temperature, options.seed, options.max_tokens, cfg.dtype)
    done: dict[str, str] = {}
    if path.exists():
        for _, row in iter_jsonl(path):
            if isinstance(row, dict) and row.get("settings") == settings:
                done[str(row["id"])] = row["answer"]
    todo = [r for r in records if r.id not in done]
    if not todo:
        return done
    from prefloop.llm import make_client

    if parse_spec(spec).backend != "local":
        raise ValueError(f"{spec}: answers are generated with a local model (a folder, .gguf or smollm2)")
    say(console, f"generating {len(todo)} answers with {spec} (batch {cfg.batch_size}, "
                 f"{'greedy' if options.temperature == 0 else f'temperature {options.temperature}'})")
    client = make_client(spec, dtype=cfg.dtype, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    try:
        with JsonlAppender(path) as out:
            for i in range(0, len(todo), cfg.batch_size):
                batch = todo[i: i + cfg.batch_size]
                answers = client.generate_batch([r.prompt for r in batch], options)
                for rec, answer in zip(batch, answers):
                    out.append({"id": rec.id, "answer": answer, "settings": settings, "model": spec})
                    done[rec.id] = answer
    finally:
        asyncio.run(client.aclose())
    say(console, f"  {len(todo)} answers in {time.perf_counter() - t0:.1f}s")
    return done


def generate_answers(cfg: JudgeConfig, records: list[PromptRecord], console: Any = None) -> list[dict[str, Any]]:
    """Both models' answers (one model at a time in memory).

    The same model twice is an A/A test: greedy, its answers are generated once and every prompt is a tie;
    sampled, the reference side gets the next seed, so the two sides are independent samples of one model and
    an honest judge should land near 50 %.
    """
    out = Path(cfg.out_dir)
    policy, reference = local_spec(cfg.policy), local_spec(cfg.reference)
    pol = generate_side(policy, records, out / "gen-policy.jsonl", cfg, console)
    if reference == policy and cfg.temperature == 0:
        ref = pol
    else:
        ref = generate_side(reference, records, out / "gen-reference.jsonl", cfg, console,
                            seed_offset=1 if reference == policy else 0)
    rows = [{"id": r.id, "prompt": r.prompt, "gold": r.known_good, "policy_answer": pol[r.id],
             "reference_answer": ref[r.id], "policy": cfg.policy, "reference": cfg.reference} for r in records]
    write_jsonl(out / "answers.jsonl", rows)
    return rows


# ---------------------------------------------------------------------------------------------- judging

def judgment_row(row: dict[str, Any], judge: str, verdict: PairVerdict | None) -> dict[str, Any]:
    """One judgments.jsonl line: the verdict from the policy's side plus both games by content."""
    pol, ref = row["policy_answer"], row["reference_answer"]
    name = {"A": "policy", "B": "reference", "tie": "tie", None: None}
    base = {"judge": judge, "prompt_id": row["id"], "len_policy": len(pol), "len_reference": len(ref)}
    if verdict is None:  # identical answers, not sent to the judge
        return {**base, "winner": "tie", "outcome": "tie", "consistent": None, "identical": True, "unparsed": False,
                "games": []}
    games = [{"first": name[g.first], "pick": name[g.pick], "shown": g.shown, "reason": g.reason, "raw": g.raw,
              "attempts": g.attempts, "cached": g.cached} for g in verdict.games]
    return {**base, "winner": name[verdict.winner], "outcome": OUTCOME[verdict.winner],
            "consistent": verdict.consistent, "identical": False, "unparsed": verdict.unparsed, "games": games}


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


def judge_options(cfg: JudgeConfig) -> GenOptions:
    return GenOptions(temperature=cfg.judge_temperature, seed=cfg.judge_seed, max_tokens=cfg.judge_max_tokens,
                      num_ctx=cfg.judge_num_ctx)


async def judge_all(cfg: JudgeConfig, judge: str, answers: list[dict[str, Any]], cache: JudgeCache,
                    console: Any = None, client: Any = None) -> tuple[dict[str, dict[str, Any]], Any]:
    """Judge every answer pair with one judge through the runner; returns rows by prompt id and the summary."""
    from prefloop.llm import make_client

    template = load_template(cfg.template)
    check_fields(template, ("prompt", "answer_a", "answer_b"))
    options = judge_options(cfg)
    own = client is None
    client = verdict_client(cfg, judge, client or make_client(judge, invalid_retries=0))  # ours are the only re-asks
    bounded = Bounded(client, cfg.concurrency)
    jobs = []
    for row in answers:
        reference = row.get("gold") if cfg.use_reference else None
        jid = stable_id(judge, template.hash, row["id"], row["policy_answer"], row["reference_answer"], reference,
                        options.temperature, options.seed, options.max_tokens)
        jobs.append(Job(id=jid, data=(row, reference)))

    async def work(job: Job) -> dict[str, Any]:
        row, reference = job.data
        if not cfg.judge_identical and row["policy_answer"].strip() == row["reference_answer"].strip():
            return judgment_row(row, judge, None)
        verdict = await judge_pair(bounded, row["prompt"], row["policy_answer"], row["reference_answer"],
                                   reference=reference, cache=cache, template=template, options=options,
                                   attempts=cfg.attempts)
        return judgment_row(row, judge, verdict)

    path = Path(cfg.out_dir) / "judgments.jsonl"
    try:
        if own:
            await client.preflight()
        runner = Runner(path, concurrency=cfg.concurrency, console=console, description=f"judging ({judge})",
                        backoff_s=0.2)
        summary = await runner.run(jobs, work)
    finally:
        if own:
            await client.aclose()
    wanted = {j.id: j.data[0]["id"] for j in jobs}
    rows = {wanted[obj["id"]]: obj for _, obj in iter_jsonl(path) if isinstance(obj, dict) and obj.get("id") in wanted}
    return rows, summary


async def judge_phase(cfg: JudgeConfig, answers: list[dict[str, Any]], clients: dict[str, Any],
                      console: Any) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any], Any]:
    """Every judge, then the optional adversarial check, in one event loop (clients are bound to the loop that
    first used them)."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    summaries: dict[str, Any] = {}
    with JudgeCache(cfg.cache_path) as cache:
        for judge in cfg.judges:
            rows[judge], summaries[judge] = await judge_all(cfg, judge, answers, cache, console, clients.get(judge))
    robustness = None
    if cfg.adversarial and answers:
        robustness = await adversarial_check(cfg, answers[: cfg.adversarial], clients.get(cfg.judges[0]))
    return rows, summaries, robustness


async def adversarial_check(cfg: JudgeConfig, rows: list[dict[str, Any]], client: Any = None) -> dict[str, Any]:
    """Flip rates of the headline judge when the reference answer is edited adversarially (judge.robustness)."""
    from judge.robustness import flip_rates
    from prefloop.llm import make_client

    own = client is None
    client = verdict_client(cfg, cfg.judges[0], client or make_client(cfg.judges[0], invalid_retries=0))
    items = [(r["prompt"], r["policy_answer"], r["reference_answer"]) for r in rows]
    refs = [r.get("gold") if cfg.use_reference else None for r in rows]
    try:
        with JudgeCache(cfg.cache_path) as cache:
            out = await flip_rates(client, items, cache=cache, reference=refs, concurrency=cfg.concurrency,
                                   template=load_template(cfg.template), options=judge_options(cfg),
                                   attempts=cfg.attempts)
    finally:
        if own:
            await client.aclose()
    out["judge"] = cfg.judges[0]
    return out


# -------------------------------------------------------------------------------------------- statistics

def judge_stats(rows: list[dict[str, Any]], cfg: JudgeConfig) -> dict[str, Any]:
    """Win rate, interval, LC win rate and diagnostics of one judge's rows (one per prompt)."""
    outcomes = [r["outcome"] for r in rows]
    s = summarize(outcomes, n_boot=cfg.n_boot, seed=cfg.bootstrap_seed)
    lc = lc_win_rate(outcome_values(outcomes), [r["len_policy"] for r in rows], [r["len_reference"] for r in rows])
    letter = {"policy": "A", "reference": "B", "tie": "tie", None: None}
    games = [GameRecord(r["prompt_id"], first=letter[g["first"]], pick=letter[g["pick"]], len_a=r["len_policy"],
                        len_b=r["len_reference"]) for r in rows for g in r["games"]]
    diag = diagnostics(games)
    judged = [r for r in rows if not r["identical"]]
    diag.update(
        unparsed=sum(r["unparsed"] for r in rows),
        inconsistent=sum(r["consistent"] is False for r in rows),
        identical_answers=sum(r["identical"] for r in rows),
        judged_prompts=len(judged),
        calls=sum(g["attempts"] for r in rows for g in r["games"]),
        cached_games=sum(g["cached"] for r in rows for g in r["games"]),
        mean_len_policy=_mean([r["len_policy"] for r in rows]),
        mean_len_reference=_mean([r["len_reference"] for r in rows]),
    )
    out = {"win_rate": s.rate, "ci_low": s.ci_low, "ci_high": s.ci_high, "wins": s.wins, "ties": s.ties,
           "losses": s.losses, "n": s.n, "lc_win_rate": lc.rate, "lc_slope": lc.slope, "diagnostics": diag}
    if lc.warning:
        out["lc_warning"] = lc.warning
    return out


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def kappas(per_judge: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Cohen's κ for every pair of judges over the prompts both judged (labels: win/tie/loss/unparsed)."""
    names = list(per_judge)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(set(per_judge[a]) & set(per_judge[b]))
            la = [_label(per_judge[a][k]) for k in common]
            lb = [_label(per_judge[b][k]) for k in common]
            agree = sum(x == y for x, y in zip(la, lb)) / len(common) if common else None
            out.append({"a": a, "b": b, "kappa": cohen_kappa(la, lb) if common else None, "agreement": agree,
                        "n": len(common)})
    return out


def _label(row: dict[str, Any]) -> str:
    return "unparsed" if row["unparsed"] else row["outcome"]


# ------------------------------------------------------------------------------------------------- main

def say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)


def evaluate(cfg: JudgeConfig, console: Any = None, *, clients: dict[str, Any] | None = None) -> EvalResult:
    """Generate, judge, compute and report (see the module docstring). ``clients`` may supply already-built
    judge clients by spec (tests, the loop); otherwise each judge is built from its spec."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for judge in cfg.judges:  # refuse a bad judge setting before spending time on answers
        verdict_client(cfg, judge, None)
    records, pair_gens = load_eval_prompts(cfg)
    train_gens, warnings = training_checks(cfg, records)
    warnings += self_preference_warnings(cfg.judges, pair_gens | train_gens)
    warnings += self_preference_warnings(cfg.judges, {cfg.policy, cfg.reference}, role="one of the models being compared")
    for w in warnings:
        say(console, f"[yellow]warning:[/] {w}")
    answers = generate_answers(cfg, records, console)

    per_judge_rows, summaries, robustness = asyncio.run(judge_phase(cfg, answers, clients or {}, console))

    complete = all(s.done for s in summaries.values()) and all(
        len(per_judge_rows[j]) == len(answers) for j in cfg.judges)
    per_judge = {}
    for judge in cfg.judges:
        ordered = [per_judge_rows[judge][a["id"]] for a in answers if a["id"] in per_judge_rows[judge]]
        stats = judge_stats(ordered, cfg) if ordered else {"n": 0}
        stats["run"] = summaries[judge].to_json()
        per_judge[judge] = stats
        diag = stats.get("diagnostics", {})
        if diag.get("unparsed"):
            warnings.append(f"{judge}: {diag['unparsed']} of {stats['n']} prompts had a judgment that never "
                            "parsed; they count as ties")
        if diag.get("parse_rate") is not None and diag["parse_rate"] < 0.9:
            warnings.append(f"{judge}: only {diag['parse_rate']:.0%} of judge replies parsed; the win rate says "
                            "little with this judge")
        if diag.get("position_consistency") is not None and diag["position_consistency"] < 0.5:
            warnings.append(f"{judge}: only {diag['position_consistency']:.0%} of prompts got the same verdict in "
                            f"both orders (it picks the first answer {diag['first_position_rate'] or 0:.0%} of the "
                            "time): this judge decides by position; its inconsistent verdicts are ties")
        if stats.get("lc_warning"):
            warnings.append(f"{judge}: {stats['lc_warning']}")
    if not complete:
        missing = {j: len(answers) - len(per_judge_rows[j]) for j in cfg.judges}
        warnings.append("incomplete: " + ", ".join(f"{j} lacks {n} judgments" for j, n in missing.items() if n)
                        + f" (reasons in {out / 'judgments.jsonl.failures.jsonl'}); run the same command again "
                          "to resume from the cache")

    if robustness is not None:
        for name in ("injection", "longer", "empty"):
            if robustness[name]["attacked_wins"] > 0.2:
                warnings.append(f"{cfg.judges[0]}: an answer edited by '{name}' won "
                                f"{robustness[name]['attacked_wins']:.0%} of {robustness['n']} pairs; "
                                "this judge is easy to game")

    head = per_judge[cfg.judges[0]]
    results = {
        "win_rate": head.get("win_rate"), "ci_low": head.get("ci_low"), "ci_high": head.get("ci_high"),
        "wins": head.get("wins"), "ties": head.get("ties"), "losses": head.get("losses"), "n": head.get("n"),
        "lc_win_rate": head.get("lc_win_rate"), "diagnostics": head.get("diagnostics"),
        "judge": cfg.judges[0], "judges": per_judge, "kappa": kappas(per_judge_rows) if len(cfg.judges) > 1 else [],
        "complete": complete, "warnings": warnings, "policy": cfg.policy, "reference": cfg.reference,
        "prompts": cfg.prompts, "n_prompts": len(answers), "confidence": 0.95, "n_boot": cfg.n_boot,
        "robustness": robustness, "template": cfg.template, "template_hash": load_template(cfg.template).hash,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "results.json").write_text(json.dumps(_clean(results), indent=2, ensure_ascii=False) + "\n")
    from judge.report import write_report

    write_report(out, results, answers, per_judge_rows, cfg.examples)
    return EvalResult(out_dir=out, results=results, complete=complete, warnings=warnings)


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj

