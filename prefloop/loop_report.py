"""The run folder's report (``report.html`` + ``report.md``), built only from what the run folder holds, so it can
be rewritten at any time (``prefloop run CONFIG --report-only``) and shows a half-finished run as it is.

Order follows what a reader needs: the held-out win rate and whether it means anything, then what could make it
meaningless (preflight, judge diagnostics), then how the data and the training went, then the answers themselves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefloop.jsonl import read_jsonl
from prefloop.report import Report, load_json, pct
from trainer.report import plot_training_metrics
from judge.report import plot_win_rates

EXAMPLES_SHOWN = 8

PRINCIPLE = ("The headline is the win rate on **held-out prompts** that never reached training, judged by a "
             "model. The training loss and reward curves further down are diagnostics only: a falling loss "
             "does not mean people prefer the answers.")


def write_run_report(run_dir: str | Path, cfg: Any = None, *, warnings: list[str] | None = None,
                     failed: str | None = None) -> tuple[Path, Path]:
    """Build the report from ``run_dir`` and write ``report.html`` / ``report.md`` there."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    state = (load_json(run_dir / "state.json") or {}).get("stages", {})
    name = getattr(cfg, "name", None) or run_dir.name
    report = Report(f"prefloop run: {name}",
                    subtitle=f"run folder `{run_dir}` · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    warnings = list(warnings or [])
    if failed:
        report.warning(f"The run stopped early: {failed}")

    judge_dir = run_dir / "judge"
    raw_results = load_json(judge_dir / "results.json") or {}
    results = judge_results(raw_results)
    _headline(report, results, plots, state)

    preflight = load_json(run_dir / "preflight" / "summary.json")
    warnings += list((preflight or {}).get("warnings", []))
    warnings += _judge_warnings(results, cfg)
    warnings += _answer_warnings(judge_dir)
    warnings += list(raw_results.get("warnings") or [])   # the judge's own (self-preference, position bias)
    gen_summary = _generation_summary(run_dir)
    if gen_summary and gen_summary.get("failed"):
        warnings.append(f"generation left {gen_summary['failed']} prompt(s) failed; rerun the same command to "
                        f"retry them")
    if warnings:
        report.heading("Warnings")
        for text in dict.fromkeys(warnings):
            report.warning(text)

    _preflight_section(report, run_dir, preflight)
    _judge_section(report, results, raw_results.get("kappa") or [])
    _generation_section(report, run_dir, gen_summary)
    _split_section(report, run_dir)
    _training_section(report, run_dir, plots, state)
    _examples_section(report, judge_dir)
    _stages_section(report, state)
    _next_steps(report, cfg)
    return report.write(run_dir, "report")


# ------------------------------------------------------------------------------------------- judge results

def judge_results(raw: Any) -> list[tuple[str, dict[str, Any]]]:
    """``[(judge name, result)]`` from the judge's ``results.json``, whether it holds one judge's numbers or a
    list / table of judges."""
    if not isinstance(raw, dict):
        return []
    judges = raw.get("judges")
    if isinstance(judges, dict) and judges:
        return [(str(k), v) for k, v in judges.items() if isinstance(v, dict) and v.get("n")]
    if isinstance(judges, list) and judges:
        return [(str(v.get("judge") or v.get("name") or f"judge {i + 1}"), v) for i, v in enumerate(judges)
                if isinstance(v, dict)]
    if "win_rate" in raw:
        return [(str(raw.get("judge") or raw.get("name") or "judge"), raw)]
    return []


def _verdict(r: dict[str, Any]) -> str:
    lo, hi, n = r.get("ci_low"), r.get("ci_high"), r.get("n")
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)):
        return "no interval available"
    if lo > 0.5:
        return "the trained model is preferred over its reference (the whole interval is above 50%)"
    if hi < 0.5:
        return "the trained model is **worse** than its reference (the whole interval is below 50%)"
    return (f"no detectable difference from the reference: the interval contains 50% (n = {n}; more held-out "
            f"prompts or a stronger judge narrow it)")


def _headline(report: Report, results: list[tuple[str, dict[str, Any]]], plots: Path, state: dict) -> None:
    report.heading("Held-out win rate")
    report.paragraph(PRINCIPLE)
    if not results:
        report.paragraph("No judge results yet: the judge stage has not finished (see the stage table below).")
        return
    rows = []
    for name, r in results:
        rows.append({"judge": name, "win rate": pct(r.get("win_rate")),
                     "95% CI": f"{pct(r.get('ci_low'))} – {pct(r.get('ci_high'))}",
                     "wins": r.get("wins"), "ties": r.get("ties"), "losses": r.get("losses"), "n": r.get("n"),
                     "length-controlled": pct(r.get("lc_win_rate")) if r.get("lc_win_rate") is not None else None})
    report.table(rows)
    name, first = results[0]
    report.paragraph(f"Headline ({name}): {_verdict(first)}.")
    same = (first.get("diagnostics") or {}).get("identical_answers")
    if same and first.get("n"):
        report.paragraph(f"{same} of {first['n']} trained answers are word for word the reference's (ties, no "
                         f"judge asked): training moved the model little on these prompts. More pairs, more steps or "
                         f"a larger learning rate move it further; a larger beta keeps it closer.")
    png = plot_win_rates([{"name": n, **r} for n, r in results], plots / "win_rate.png")
    if png:
        report.image(png, caption="win rate of the trained model over its SFT reference, with its 95% interval; "
                                  "the dashed line is 50% (no better than the reference)")


def _judge_warnings(results: list[tuple[str, dict[str, Any]]], cfg: Any) -> list[str]:
    out = []
    weak = [n for n, _ in results if "smollm2" in n.lower() or "135m" in n.lower()]
    if weak:
        out.append(f"the judge {', '.join(weak)} is a 135M-parameter model: its verdicts are close to random, so "
                   f"this win rate tests the plumbing, not the model. Use a strong judge for a real reading "
                   f"([judge] judges = [\"ollama:llama3.1:8b\"] or larger).")
    for name, r in results:
        diag = r.get("diagnostics") or {}
        pol, ref = diag.get("mean_len_policy"), diag.get("mean_len_reference")
        if isinstance(pol, (int, float)) and isinstance(ref, (int, float)) and ref > 0 and pol > 1.5 * ref:
            out.append(f"the trained model's answers are {pol / ref:.1f}x as long as the reference's ({pol:.0f} vs "
                       f"{ref:.0f} characters): DPO often buys preference with length; compare the length-controlled "
                       f"win rate, and raise beta or lower lr if the answers only grew")
        n = r.get("n")
        if isinstance(n, int) and n < 30:
            out.append(f"only {n} held-out prompts were judged by {name}: the interval is wide; hold out more "
                       f"prompts for a firmer number")
    return out


def repeats_itself(text: str, n: int = 4, times: int = 3) -> bool:
    """An answer stuck in a loop: some run of ``n`` words appears at least ``times`` times."""
    words = text.split()
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        key = tuple(words[i:i + n])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] >= times:
            return True
    return False


def _answer_warnings(judge_dir: Path) -> list[str]:
    """Degeneration a weak judge may miss: trained answers that loop on a phrase, next to the reference's."""
    path = judge_dir / "answers.jsonl"
    if not path.exists():
        return []
    rows = read_jsonl(path)
    looped = sum(repeats_itself(str(r.get("policy_answer") or "")) for r in rows)
    ref_looped = sum(repeats_itself(str(r.get("reference_answer") or "")) for r in rows)
    if rows and looped > ref_looped and looped * 5 >= len(rows):
        return [f"{looped} of {len(rows)} trained answers repeat a phrase over and over (the reference's: "
                f"{ref_looped}): the policy has drifted into degenerate text, whatever the loss says; lower lr, "
                f"fewer steps or a larger beta"]
    return []


def _judge_section(report: Report, results: list[tuple[str, dict[str, Any]]], kappa: list[dict[str, Any]]
                   ) -> None:
    diag_rows = []
    for name, r in results:
        diag = r.get("diagnostics") or {}
        if isinstance(diag, dict):
            for key, value in _flatten(diag).items():
                if value is None:
                    continue
                diag_rows.append({"judge": name, "diagnostic": key, "value": value})
    if diag_rows:
        report.heading("Judge diagnostics")
        report.paragraph("How far to trust the judge: position bias and order consistency (each pair is judged in "
                         "both orders), unparseable replies, length preference.")
        report.table(diag_rows)
    if kappa:
        report.table([{"judge A": k.get("a"), "judge B": k.get("b"), "Cohen's κ": k.get("kappa"),
                       "agreement": k.get("agreement"), "n": k.get("n")} for k in kappa],
                     caption="agreement between judges")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ", ".join(str(v) for v in value[:8])
        else:
            out[name] = value
    return out


# ------------------------------------------------------------------------------------------------ preflight

def _preflight_section(report: Report, run_dir: Path, summary: dict | None) -> None:
    if not summary:
        return
    report.heading("Preflight: can the SFT model already do the task?")
    report.paragraph("DPO shapes style and preference on top of a skill the model already has; it does not teach "
                     "the skill. Before training, the judge scored the SFT model's answers to a few held-out "
                     "prompts (0–100) next to the dataset's own answers.")
    report.key_values({"prompts": summary.get("n"), "scored": summary.get("scored"),
                       "SFT answers, mean score": summary.get("mean_score"),
                       "dataset answers, mean score": summary.get("mean_reference_score"),
                       "empty answers": summary.get("empty"), "answers echoing the prompt": summary.get("echo"),
                       "judge": summary.get("judge")})
    if not summary.get("warnings"):
        report.paragraph("No sign that the model cannot do the task.")
    answers = run_dir / "preflight" / "answers.jsonl"
    if answers.exists():
        rows = read_jsonl(answers)
        report.table([{"prompt": _short(_prompt_text(r.get("prompt")), 90), "SFT answer": _short(r.get("answer"), 120),
                       "score": r.get("score"), "dataset answer score": r.get("reference_score")} for r in rows])


# ----------------------------------------------------------------------------------------------- generation

def _generation_summary(run_dir: Path) -> dict | None:
    return load_json(run_dir / "generate" / "pairs.jsonl.summary.json")


def _generation_section(report: Report, run_dir: Path, s: dict | None) -> None:
    report.heading("Generation")
    if not s:
        report.paragraph("No generation summary yet.")
        return
    report.key_values({"prompts": s.get("prompts"), "pairs in the file": s.get("total_in_output"),
                       "written this run": s.get("written"), "already there (resumed)": s.get("skipped_existing"),
                       "failed": s.get("failed"), "seconds (last run)": s.get("elapsed_s")})
    dropped = s.get("dropped") or {}
    if dropped:
        report.table([{"dropped because": why, "pairs": n} for why, n in sorted(dropped.items())],
                     caption="prompts that produced no pair, and why")
    else:
        report.paragraph("No prompt was dropped.")
    reasons = (s.get("run") or {}).get("failure_reasons") or {}
    if reasons:
        report.table([{"failed because": why, "prompts": n} for why, n in sorted(reasons.items())],
                     caption="failures (retried on the next run)")
    pairs = run_dir / "generate" / "pairs.jsonl"
    if pairs.exists():
        rows = read_jsonl(pairs)[:1]
        for row in rows:
            report.example("a generated pair", _prompt_text(row.get("prompt")),
                           {"chosen": row.get("chosen", ""), "rejected": row.get("rejected", "")})


def _split_section(report: Report, run_dir: Path) -> None:
    s = load_json(run_dir / "split" / "summary.json")
    if not s:
        return
    report.heading("Held-out split")
    report.paragraph("Whole prompts are held out, chosen by a hash of the prompt text: no held-out prompt reaches "
                     "training. Pairs of held-out prompts feed only the eval curves.")
    report.key_values({"training pairs": s.get("train_pairs"), "held-out prompts (judged)": s.get("heldout_prompts"),
                       "held-out pairs (eval curves only)": s.get("heldout_pairs"),
                       "prompts without a pair": s.get("prompts_without_pairs"),
                       "held-out prompts found in training": s.get("leaked")})


# ------------------------------------------------------------------------------------------------- training

FINAL_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
                 "logps/chosen", "logps/rejected")


def _training_section(report: Report, run_dir: Path, plots: Path, state: dict) -> None:
    report.heading("Training (diagnostics, not the result)")
    metrics = run_dir / "train" / "metrics.jsonl"
    info = (state.get("train") or {}).get("info") or {}
    if not metrics.exists():
        report.paragraph("No training metrics yet.")
        return
    from trainer.report import read_metrics

    rows = read_metrics(metrics)
    png = plot_training_metrics(rows, plots / "training.png")
    if png:
        report.image(png, caption="DPO loss, reward margin (chosen − rejected), reward accuracy and the policy's "
                                  "log-probs of chosen and rejected answers; solid: training batches, dashed: "
                                  "held-out pairs")
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        last.setdefault(row["split"], {}).update({k: v for k, v in row.items() if k in FINAL_METRICS or k == "step"})
    table = []
    for metric in ("step",) + FINAL_METRICS:
        if any(metric in last.get(s, {}) for s in ("train", "eval")):
            table.append({"metric": metric, "train (last)": last.get("train", {}).get(metric),
                          "eval (last)": last.get("eval", {}).get(metric)})
    if table:
        report.table(table)
    facts = {k: info.get(k) for k in ("stopped_reason", "steps", "final_model_dir", "seconds") if info.get(k)}
    if facts:
        report.key_values(facts)
    evals = [r["logps/chosen"] for r in rows if r["split"] == "eval" and isinstance(r.get("logps/chosen"), float)]
    # the same held-out pairs at every eval, so a drop is the model's, not a different batch's
    if len(evals) >= 2 and evals[-1] < evals[0] - max(1.0, 0.05 * abs(evals[0])):
        report.warning("the policy's log-prob of the chosen answers fell during training (both sides pushed down): "
                       "a known DPO failure that can make answers worse even while the margin grows; try a larger "
                       "beta, a lower lr, or rpo_alpha > 0")


# ------------------------------------------------------------------------------------------------- examples

def _pick(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


WINNER_TEXT = {"policy": "trained model wins", "reference": "reference wins", "tie": "tie"}


def _examples_section(report: Report, judge_dir: Path) -> None:
    answers_path = judge_dir / "answers.jsonl"
    if not answers_path.exists():
        return
    answers = read_jsonl(answers_path)
    verdicts: dict[str, list[str]] = {}
    judgments = judge_dir / "judgments.jsonl"
    if judgments.exists():
        for j in read_jsonl(judgments):
            pid = str(_pick(j, "prompt_id", "id") or "")
            winner = _pick(j, "winner", "verdict", "outcome", "result")
            who = _pick(j, "judge", "judge_model") or ""
            if pid and winner is not None:
                text = WINNER_TEXT.get(str(winner), str(winner))
                if j.get("identical"):
                    text = "identical answers (tie)"
                elif j.get("consistent") is False:
                    text += " (the two orders disagreed)"
                verdicts.setdefault(pid, []).append(f"{who}: {text}" if who else text)
    report.heading("Held-out answers, side by side")
    report.paragraph("Greedy answers of the SFT reference and the trained model to prompts neither saw in DPO "
                     "training, with the judge's verdict.")
    for row in answers[:EXAMPLES_SHOWN]:
        pid = str(_pick(row, "prompt_id", "id") or "")
        cols = [("reference (SFT)", str(_pick(row, "reference_answer", "reference", "ref_answer") or "")),
                ("trained (DPO)", str(_pick(row, "policy_answer", "policy", "trained_answer") or ""))]
        known = _pick(row, "known_good", "known_answer", "gold", "dataset_answer")
        if known:
            cols.append(("dataset answer", str(known)))
        note = "; ".join(verdicts.get(pid, [])) or None
        report.example(f"prompt {pid}", _prompt_text(row.get("prompt")), cols, note=note)
    if len(answers) > EXAMPLES_SHOWN:
        report.paragraph(f"{len(answers) - EXAMPLES_SHOWN} more in `judge/answers.jsonl`.")


# ------------------------------------------------------------------------------------------------ the rest

def _stages_section(report: Report, state: dict) -> None:
    if not state:
        return
    report.heading("Stages")
    rows = []
    for name, rec in state.items():
        info = rec.get("info") or {}
        rows.append({"stage": name, "status": rec.get("status"), "fingerprint": rec.get("fingerprint"),
                     "runs": rec.get("runs"), "seconds (last run)": info.get("seconds")})
    report.table(rows)
    report.paragraph("A stage is skipped when its fingerprint (settings + inputs) matches a finished run; change a "
                     "setting and only that stage and the ones after it run again.")


def _next_steps(report: Report, cfg: Any) -> None:
    from prefloop.loop import HOW_TO_SCALE_UP

    report.heading("Next")
    report.paragraph(HOW_TO_SCALE_UP)
    report.paragraph("If the preflight warned that the model cannot do the task, DPO will not fix that: fine-tune "
                     "first (`prefloop sft`), then run this loop on the SFT model.")


def _prompt_text(prompt: Any) -> str:
    """A prompt for reading: Alpaca prompts lose their fixed header and response marker (the task remains)."""
    from prefloop.records import prompt_text
    from prefloop.templates import ALPACA_HEADER, ALPACA_RESPONSE

    if prompt is None:
        return ""
    text = prompt_text(prompt) if isinstance(prompt, (str, list)) else json.dumps(prompt)
    if text.startswith(ALPACA_HEADER) and text.endswith(ALPACA_RESPONSE):
        text = text[len(ALPACA_HEADER):-len(ALPACA_RESPONSE)].strip()
        text = text.removeprefix("### Instruction:\n")
    return text


def _short(text: Any, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
