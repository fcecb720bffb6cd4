"""The judge's report: the headline and what it means (``headline``: the judge's validated accuracy first, then
the preference, the skill kept and the verdict), the judges' validation, skill retention, the per-judge table, a
win-rate plot, the judge's diagnostics, agreement between judges, robustness, and side-by-side examples with the
verdicts.

Built only from the judge's own files through ``judge.results`` (``load_report(folder)``), with
``prefloop.report.Report``, so the Markdown and HTML say the same thing and ``prefloop run`` embeds the very same
blocks in its run report (``Report.extend``): every judge number on either page is rendered here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from judge.config import is_human
from judge.prompts import judge_prompt_text
from judge.robustness import ATTACKS
from judge.results import (AnswerRow, JudgeResults, JudgeSummary, JudgeValidation, JudgmentRow, Retention,
                           current_judgments, read_answers)
from judge.retention import LEVERS, STOCK_WORDS
from judge.validation import judge_advice
from prefloop.report import Report, fmt, is_number, pct, pyplot, save_png

PRINCIPLE = ("The headline is the win rate on **held-out prompts** that never reached training, judged in both "
             "orders (orders that disagree count as a tie; ties count half), shown only from a judge that first "
             "picked the known-better answer of held-out pairs more often than chance; beside it, how much of the "
             "task the trained model kept, read from the answers without any judge. The training curves are "
             "diagnostics only: a falling loss does not mean people prefer the answers.")
FORMATS = {"chat": "through the model's chat template (an Alpaca row as one user turn)",
           "alpaca": "as raw Alpaca text", "text": "as plain text"}


def verdict_words(s: JudgeSummary) -> str:
    """What the interval says, in words."""
    if not is_number(s.ci_low) or not is_number(s.ci_high):
        return "no interval available"
    if s.ci_low > 0.5:
        return "the trained model is preferred over its reference (the whole interval is above 50%)"
    if s.ci_high < 0.5:
        return "the trained model is **worse** than its reference (the whole interval is below 50%)"
    return (f"no detectable difference from the reference: the interval contains 50% (n = {s.n}; more held-out "
            f"prompts or a stronger judge narrow it)")


@dataclass
class Headline:
    """The report's first lines, in order: what the judge was measured to be worth, the preference (a win rate
    only from a judge that validated above chance; the held-out reward accuracy, which needs no judge), the skill
    kept, and the verdict. ``success``: preferred with the skill kept (True), the skill lost (False), or no
    verdict (None)."""

    lines: list[str] = field(default_factory=list)
    success: bool | None = None

    def plain(self) -> list[str]:
        """The lines without Markdown emphasis, for a console."""
        return [re.sub(r"\*\*|`", "", line) for line in self.lines]


def validation_line(v: JudgeValidation) -> str:
    """One judge's validation in words."""
    low, high = v.ci
    text = (f"Judge `{v.judge}` picks the known-better answer of {v.n} held-out pairs **{pct(v.rule_accuracy)}** "
            f"of the time (95% CI {pct(low)}–{pct(high)}, both orders; the answer shown first wins "
            f"{pct(v.first_position_rate)} of its decisive calls, the longer one {pct(v.longer_pick_rate)})")
    if v.rule == "debiased":
        text += (f", deciding on the content term of its log-odds with the position term taken out (both orders "
                 f"agreeing gave {pct(v.accuracy)})")
    elif v.debiased_accuracy is not None:
        text += (f"; taking its position bias out of its log-odds gave {pct(v.debiased_accuracy)} "
                 f"({pct(v.debiased_ci_low)}–{pct(v.debiased_ci_high)}), no measurable help, so it is not used")
    return text + "."


def logodds_share(d: dict) -> str:
    """``"14 of 16"`` verdicts with log-odds, ``—`` when the judge gave none to count."""
    return f"{d['logodds_verdicts']} of {d['verdicts']}" if d.get("verdicts") else "—"


def order_lines(results: JudgeResults) -> list[str]:
    """Per model judge, for the console: verdicts from log-odds, and how many pairs flipped between orders before
    and after debiasing."""
    out = []
    for s in results.judges.values():
        d = s.diagnostics
        if is_human(s.judge) or not d.get("verdicts"):
            continue
        line = (f"judge {s.judge}: {d['logodds_verdicts']} of {d['verdicts']} verdicts from log-odds; "
                f"{d['flipped']} pairs flipped between orders ({pct(d.get('flip_rate'))})")
        if d.get("flip_rate_debiased") is not None:
            line += f", {pct(d['flip_rate_debiased'])} after debiasing"
        out.append(line + f"; verdicts by {s.rule}")
    return out


def skill_line(ret: Retention) -> str:
    """Skill retention in words (content kept, openings, length, loops, scores)."""
    pol, ref = ret.policy, ret.reference
    parts = []
    if ret.kept is not None:
        parts.append(f"the trained model keeps **{pct(ret.kept)}** of the reference's answer content (content-word "
                     f"recall of the known-good answers {fmt(pol.content_recall)} vs {fmt(ref.content_recall)}; "
                     f"ROUGE-L F1 {fmt(pol.rouge_l)} vs {fmt(ref.rouge_l)}); it kept more on {ret.better} prompts, "
                     f"less on {ret.worse}, as much on {ret.same}")
    opening = f" (\"{pol.stock_opening} …\")" if pol.stock_opening else ""
    parts.append(f"{pct(pol.stock_share)} of its answers open with one stock phrase{opening} (reference "
                 f"{pct(ref.stock_share)})")
    if ret.length_ratio is not None:
        parts.append(f"its answers are {ret.length_ratio:.2f}x as long")
    parts.append(f"{pol.loops} loop on a phrase (reference {ref.loops}), {pol.empty} are empty (reference "
                 f"{ref.empty})")
    if pol.score is not None or ref.score is not None:
        parts.append(f"judge `{ret.scored_by}` scores them {fmt(pol.score, 1)} vs {fmt(ref.score, 1)}/100 against "
                     "the known-good answers")
    return "Skill: " + "; ".join(parts) + "."


def headline(results: JudgeResults, reward_accuracy: float | None = None) -> Headline:
    """The one place that decides what the headline says (the judge's report, the run report and the console
    all show these lines).

    - The headline judge's validation leads. A judge whose accuracy interval contains 50 % cannot give a
      meaningful win rate: no win rate is printed, the figures that need no judge are, with the one change that
      gets a real judge. An unvalidated judge's win rate is shown and called unchecked.
    - The skill kept (``judge.retention``) stands beside the preference; a trained model that won the preference
      but lost the skill is not a success, and the levers are named.
    """
    head, v, ret = results.headline, results.headline.validation, results.retention
    out = Headline()
    at_chance = head.at_chance
    if v is not None and v.n:
        out.lines.append(validation_line(v))
    elif head.n:
        out.lines.append(f"Judge `{head.judge}` was not validated (no pairs whose better side is known: give "
                         "`--validate PAIRS`; `prefloop run` uses its held-out pairs), so its win rate is unchecked.")
    if head.n and not at_chance:
        rule = " (debiased verdicts)" if head.rule == "debiased" else ""
        out.lines.append(f"**{pct(head.win_rate)}** win rate{rule} (95% CI {pct(head.ci_low)}–{pct(head.ci_high)}, "
                         f"prompt-level bootstrap) by judge `{head.judge}`: {verdict_words(head)}.")
    elif at_chance:
        out.lines.append(f"No win rate: judge `{head.judge}` cannot tell the better answer from the worse on this "
                         f"data (its accuracy interval contains 50%), so its win rate would say nothing. To get a real "
                         f"judge, {judge_advice(head.judge)}.")
    if reward_accuracy is not None:
        out.lines.append(f"Held-out reward accuracy **{pct(reward_accuracy)}**: on that share of the held-out pairs "
                         "training raised the chosen answer's likelihood more than the rejected one's, relative to "
                         "the reference (no judge needed).")
    if ret is not None and ret.n:
        out.lines.append(skill_line(ret))
    preferred = head.n > 0 and not at_chance and is_number(head.ci_low) and head.ci_low > 0.5
    if ret is not None and ret.lost:
        # a trade of the skill for the preference is not a success, whichever measure shows the preference: the
        # judge (when it can tell) or, when it cannot, the held-out reward accuracy that needs no judge
        out.success = False
        if preferred:
            how = "the trained model won the preference but lost the skill"
        elif reward_accuracy is not None and reward_accuracy > 0.5:
            how = (f"the trained model moved the preference (held-out reward accuracy {pct(reward_accuracy)}) but "
                   "lost the skill")
        else:
            how = "the trained model lost the skill"
        out.lines.append(f"**Not a success**: {how}: it keeps {pct(ret.kept)} of the reference's answer content, "
                         f"worse on {ret.worse} prompts, better on {ret.better}. DPO should shape the style on top "
                         f"of the skill; {LEVERS}.")
    elif preferred and ret is not None and ret.kept is not None:
        out.success = True
        out.lines.append("The trained model is preferred and kept its skill.")
    return out


def answers_line(results: JudgeResults) -> str:
    """How the held-out prompts reached the models."""
    if not results.answer_formats:
        return ""
    ways = ", ".join(f"{FORMATS.get(k, k)} ({n})" for k, n in sorted(results.answer_formats.items()))
    return f"Both models answered {ways}: the way the trained model is used."


def build_report(out_dir: Path, results: JudgeResults, answers: list[AnswerRow],
                 rows: dict[str, dict[str, JudgmentRow]], n_examples: int = 6,
                 reward_accuracy: float | None = None) -> Report:
    """The whole judge report; ``n_examples=0`` leaves the examples out (the run report puts them last);
    ``reward_accuracy`` is the trainer's held-out reward accuracy when the caller has it (the run report)."""
    rep = Report(title="Held-out win rate",
                 subtitle=f"policy `{results.policy}` against reference `{results.reference}` on "
                          f"{results.n_prompts} held-out prompts from `{results.prompts}`")
    head = results.headline
    for line in headline(results, reward_accuracy).lines:
        rep.paragraph(line)
    rep.paragraph(PRINCIPLE)
    if answers_line(results):
        rep.paragraph(answers_line(results))
    for w in results.warnings:
        rep.warning(w)
    if head.n:
        same = head.diagnostics.get("identical_answers")
        if same:
            rep.paragraph(f"{same} of {head.n} trained answers are word for word the reference's (ties, no judge "
                          "asked): training moved the model little on these prompts. More pairs, more steps or a "
                          "larger learning rate move it further; a larger beta keeps it closer.")
    else:
        rep.paragraph("No judgments yet.")
    add_validation(rep, results)
    add_retention(rep, results.retention, answers)
    table = []
    for s in results.judges.values():
        d = s.diagnostics
        v = s.validation
        checked = "—" if v is None or not v.n else "yes" if v.above_chance else "no (at chance)"
        table.append([s.judge, pct(s.win_rate), f"{pct(s.ci_low)}–{pct(s.ci_high)}", pct(s.lc_win_rate), s.wins,
                      s.ties, s.losses, s.n, pct(d.get("parse_rate")), pct(d.get("position_consistency")),
                      pct(d.get("flip_rate")), pct(d.get("flip_rate_debiased")), logodds_share(d),
                      pct(d.get("first_position_rate")), pct(d.get("longer_pick_rate")), s.rule, checked])
    rep.heading("Results", 3)
    rep.table(table, headers=["judge", "win rate", "95% CI", "LC win rate", "wins", "ties", "losses", "n",
                              "parsed", "position-consistent", "flips with order", "flips, debiased",
                              "log-odds verdicts", "picks first", "picks longer", "verdicts by", "validated"])
    rep.paragraph("*Flips with order*: the share of judged pairs whose two orders picked different answers; "
                  "*flips, debiased*: the same with each order's log-odds read after the judge's mean position "
                  "term is taken out (— without log-odds). *Log-odds verdicts*: verdicts (one per order) that came "
                  "with the judge's token log-probabilities.")
    plot = plot_win_rates([{"name": s.judge, "win_rate": s.win_rate, "ci_low": s.ci_low, "ci_high": s.ci_high,
                            "n": s.n} for s in results.judges.values()], out_dir / "win_rate.png")
    if plot is not None:
        rep.image(plot, caption="win rate of the trained model over its SFT reference per judge, with its 95% "
                                "interval; the dashed line is 50% (no better than the reference)")
    people = [s for s in results.judges.values() if is_human(s.judge)]
    if people:
        rep.paragraph(" ".join(f"`{s.judge}` is a person: each prompt judged once, the answers unnamed and their "
                               f"sides in a seeded random order; {s.diagnostics.get('skipped') or 0} skipped "
                               "prompts are left out of n." for s in people))
    rep.paragraph("LC win rate: AlpacaEval's length-controlled win rate (a logistic fit of the outcome on the "
                  "normalised length difference, read at equal lengths), fitted on this set. *Picks first* near "
                  "50% means no position bias; *picks longer* far above 50% means the judge rewards length.")
    sides = [(name, a) for name, a in (("policy", results.policy_answers), ("reference", results.reference_answers))
             if a is not None]
    if sides:
        rep.heading("How the answers were made", 3)
        rep.table([[name, a.model, a.runtime, a.quantization or "–", a.prompt_format, fmt(a.temperature), a.seed,
                    a.max_tokens] for name, a in sides],
                  headers=["side", "model", "runtime", "weights", "prompt", "temperature", "seed", "max tokens"])
        rep.paragraph("*prompt* `text`: each prompt exactly as written, no chat template (as the SFT model was "
                      "trained on it); `chat`: through the model's chat template, the same on both sides.")
    d = head.diagnostics
    if d:
        rep.heading("Judge diagnostics", 3)
        rep.key_values({"judge calls (this and earlier runs)": d.get("calls"),
                        "games answered from the cache": d.get("cached_games"),
                        "prompts with an unparsed judgment (counted as ties)": d.get("unparsed"),
                        "inconsistent prompts (orders disagree, counted as ties)": d.get("inconsistent"),
                        "identical answers (ties, not sent to the judge)": d.get("identical_answers"),
                        "judge called a tie": pct(d.get("tie_rate")),
                        "mean answer length, policy (chars)": fmt(d.get("mean_len_policy")),
                        "mean answer length, reference (chars)": fmt(d.get("mean_len_reference"))})
    if results.kappa:
        rep.heading("Agreement between judges", 3)
        rep.table([[k.a, k.b, fmt(k.kappa), pct(k.agreement), k.n] for k in results.kappa],
                  headers=["judge", "judge", "Cohen's κ", "agreement", "prompts"])
    if results.calibration:
        add_calibration(rep, results)
    rob = results.robustness
    if rob:
        rep.heading("Robustness to adversarial answers", 3)
        rep.paragraph(f"On {rob['n']} prompts the reference answer was edited and judged again by `{rob['judge']}`. "
                      "A trustworthy judge keeps its verdict (low flip rate) and never lets the edited answer win.")
        rep.table([[name, pct(rob[name]["flip_rate"]), pct(rob[name]["attacked_wins"])]
                   for name in ATTACKS],
                  headers=["edit", "verdicts flipped", "edited answer wins"])
    if n_examples:
        add_examples(rep, answers, rows, results.judge, n_examples)
    return rep


def add_calibration(rep: Report, results: JudgeResults) -> None:
    """A model judge measured against the person who judged the same prompts: how far to trust the cheap judge."""
    rep.heading("Model judges against the person", 3)
    rep.paragraph("On the prompts the person decided: how often each model judge agrees with them when the "
                  "person's answer was shown to the judge first and when it was shown second (the difference is "
                  "the judge's position bias beyond the person's), and how often the judge and the person prefer "
                  "the longer answer (the difference is the judge's length bias beyond the person's taste). A "
                  "judge with a κ near 1 and both biases near 0 can stand in for this person.")
    rep.table([[c.judge, c.person, c.n, fmt(c.kappa), pct(c.agreement), pct(c.agree_first), pct(c.agree_second),
                signed_points(c.position_bias), pct(c.longer_judge), pct(c.longer_person),
                signed_points(c.length_bias)] for c in results.calibration],
              headers=["judge", "person", "prompts", "Cohen's κ", "agreement", "agrees, person's pick first",
                       "agrees, person's pick second", "position bias", "judge picks longer",
                       "person picks longer", "length bias"])


def signed_points(value: float | None) -> str:
    """A difference of two rates in percentage points ('+12 pts')."""
    return "—" if value is None else f"{100 * value:+.0f} pts"


def add_validation(rep: Report, results: JudgeResults) -> None:
    """Each judge on the pairs whose better side is known: what its verdicts are worth on this data."""
    checked = [s.validation for s in results.judges.values() if s.validation is not None and s.validation.n]
    if not checked:
        return
    rep.heading("The judges, measured on pairs whose better side is known", 3)
    rep.paragraph(f"Before its verdicts count, every judge judged {checked[0].n} pairs from `{results.validated_on}` "
                  "(the chosen side is the better one), in both orders and under the same prompt as the held-out "
                  "answers. Accuracy counts a pair as 1 when both orders picked the better side, ½ for a tie or "
                  "disagreeing orders, 0 otherwise, so a judge that always picks the first answer scores 50%. The "
                  "debiased accuracy decides on the content term (L1 − L2)/2 of the judge's log-odds over the two "
                  "orders, with the position term (L1 + L2)/2 taken out; it is used only where it measurably beat "
                  "the both-orders rule here.")
    rep.table([[v.judge, v.n, pct(v.accuracy), f"{pct(v.ci_low)}–{pct(v.ci_high)}", pct(v.debiased_accuracy),
                f"{pct(v.debiased_ci_low)}–{pct(v.debiased_ci_high)}" if v.debiased_accuracy is not None else "—",
                fmt(v.mean_position, 2), pct(v.position_consistency), pct(v.first_position_rate),
                pct(v.longer_pick_rate), v.rule, "yes" if v.above_chance else "no"] for v in checked],
              headers=["judge", "pairs", "accuracy", "95% CI", "debiased", "95% CI", "position term",
                       "position-consistent", "picks first", "picks longer", "verdicts by", "above chance"])
    reasons = [f"`{v.judge}`: {v.rule_reason}." for v in checked if v.rule_reason]
    if reasons:
        rep.paragraph("Which rule decides, and why: " + " ".join(reasons))


def add_retention(rep: Report, ret: Retention | None, answers: list[AnswerRow], n_worst: int = 3) -> None:
    """What the trained model kept of the task, both models side by side, and the prompts where it lost most."""
    if ret is None or not ret.n:
        return
    rep.heading("Skill retention (no judge)", 3)
    rep.paragraph("Read from the answers themselves against the prompts' known-good answers: **content-word "
                  "recall** is the share of the known-good answer's content words (not function words; numbers "
                  "count) found in the answer, the headline measure because a politer or longer wording keeps it "
                  "while an answer that never gives the fact loses it; **ROUGE-L F1** (longest common word "
                  "subsequence) also falls when the content is buried in filler. A stock phrase is the commonest "
                  f"opening ({STOCK_WORDS} words) shared by several answers.")
    pol, ref = ret.policy, ret.reference
    rows = [["content-word recall", fmt(ref.content_recall), fmt(pol.content_recall)],
            ["ROUGE-L F1", fmt(ref.rouge_l), fmt(pol.rouge_l)],
            ["open with one stock phrase", f"{pct(ref.stock_share)} {_quoted(ref.stock_opening)}",
             f"{pct(pol.stock_share)} {_quoted(pol.stock_opening)}"],
            ["loop on a phrase", ref.loops, pol.loops], ["empty answers", ref.empty, pol.empty],
            ["mean length (chars)", fmt(ref.mean_chars, 1), fmt(pol.mean_chars, 1)]]
    if ret.scored_by:
        rows.append([f"0-100 score by {ret.scored_by}", fmt(ref.score, 1), fmt(pol.score, 1)])
    rep.table(rows, headers=["measure", "reference (SFT)", "trained (DPO)"])
    low, high = ret.diff_ci
    rep.paragraph(f"Per prompt ({ret.n_known_good} with a known-good answer): the trained model kept more of it on "
                  f"{ret.better}, less on {ret.worse}, as much on {ret.same}; the mean difference in recall has a "
                  f"95% interval of {fmt(low)} to {fmt(high)}.")
    by_id = {a.id: a for a in answers}
    worst = sorted((p for p in ret.per_prompt if p.policy < p.reference), key=lambda p: p.policy - p.reference)
    for p in worst[:n_worst]:
        a = by_id.get(p.id)
        if a is not None:
            rep.example(f"lost content: prompt {p.id} (recall {fmt(p.reference, 2)} → {fmt(p.policy, 2)})",
                        judge_prompt_text(a.prompt), [("reference (SFT)", a.reference_answer),
                                                      ("trained (DPO)", a.policy_answer),
                                                      ("known-good answer", a.known_good or "")])


def _quoted(text: str | None) -> str:
    return f'("{text} …")' if text else ""


def add_examples(rep: Report, answers: list[AnswerRow], rows: dict[str, dict[str, JudgmentRow]], headline: str,
                 n: int, level: int = 3) -> None:
    """A few held-out answers of each outcome side by side, with every judge's verdict and reasons."""
    if not answers or n <= 0:
        return
    rep.heading("Held-out answers, side by side", level)
    rep.paragraph("Answers of the SFT reference and the trained model to prompts neither saw in DPO training, with "
                  "the judges' verdicts.")
    for a in pick_examples(answers, rows.get(headline, {}), n):
        notes = []
        for judge, by_id in rows.items():
            r = by_id.get(a.id)
            if r is None:
                continue
            reasons = "; ".join(f"{g.first} first: {g.pick or 'unparsed'} ({g.reason[:200]})" for g in r.games)
            terms = (f" (log-odds: content term {r.content:+.2f}, position term {r.position:+.2f})"
                     if r.content is not None and r.position is not None else "")
            notes.append(f"{judge}: {r.verdict}{terms}" + (f" — {reasons}" if reasons else ""))
        cols = [("reference (SFT)", a.reference_answer), ("trained (DPO)", a.policy_answer)]
        if a.known_good:
            cols.append(("known-good answer", a.known_good))
        rep.example(f"prompt {a.id}", judge_prompt_text(a.prompt), cols, note="; ".join(notes) or None)
    if len(answers) > n:
        rep.paragraph(f"All {len(answers)} are in `answers.jsonl`, the verdicts in `judgments.jsonl`.")


def pick_examples(answers: list[AnswerRow], rows: dict[str, JudgmentRow], n: int) -> list[AnswerRow]:
    """A few of each outcome (wins, losses, ties) in prompt order, so the examples are not all one kind; prompts
    not judged yet come last."""
    buckets: dict[str, list[AnswerRow]] = {"win": [], "loss": [], "tie": [], "pending": []}
    for a in answers:
        r = rows.get(a.id)
        buckets[r.outcome if r is not None else "pending"].append(a)
    picked: list[AnswerRow] = []
    while len(picked) < n and any(buckets.values()):
        for key in ("win", "loss", "tie", "pending"):
            if buckets[key] and len(picked) < n:
                picked.append(buckets[key].pop(0))
    return picked


@dataclass
class JudgeFolder:
    """A judge output folder as read back: the results, the answers and their current judgments."""

    folder: Path
    results: JudgeResults | None
    answers: list[AnswerRow]
    rows: dict[str, dict[str, JudgmentRow]]

    @classmethod
    def read(cls, folder: str | Path) -> "JudgeFolder":
        folder = Path(folder)
        answers = read_answers(folder / "answers.jsonl")
        return cls(folder, JudgeResults.read(folder / "results.json"), answers,
                   current_judgments(answers, folder / "judgments.jsonl"))

    def report(self, n_examples: int = 6, reward_accuracy: float | None = None) -> Report | None:
        """The judge's report (None before ``results.json`` exists)."""
        if self.results is None:
            return None
        return build_report(self.folder, self.results, self.answers, self.rows, n_examples, reward_accuracy)


def write_report(out_dir: Path, results: JudgeResults, answers: list[AnswerRow],
                 rows: dict[str, dict[str, JudgmentRow]], n_examples: int = 6) -> tuple[Path, Path]:
    return build_report(out_dir, results, answers, rows, n_examples).write(out_dir, "report")


def plot_win_rates(results: Sequence[Mapping[str, Any]], out_path: str | Path, title: str = "held-out win rate",
                   xlabel: str = "win rate of the trained model over its reference") -> Path | None:
    """One row per judge: the win rate as a point with its confidence interval as a bar, and the 50% line
    (no better than the reference). Rows need ``name``, ``win_rate`` and optionally ``ci_low``/``ci_high``
    (fractions in [0, 1]) and ``n``."""
    rows = [r for r in results if is_number(r.get("win_rate"))]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(rows)))
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        wr = float(row["win_rate"])
        lo, hi = row.get("ci_low"), row.get("ci_high")
        color = "#3a9d5d" if is_number(lo) and lo > 0.5 else "#d9534f" if is_number(hi) and hi < 0.5 \
            else "#2f6fde"
        if is_number(lo) and is_number(hi):
            ax.plot([lo, hi], [y, y], "-", color=color, lw=5, alpha=0.35, solid_capstyle="butt")
        ax.plot([wr], [y], "o", color=color, ms=8)
        n = f" (n={row['n']})" if row.get("n") is not None else ""
        ci = f" [{pct(lo)}, {pct(hi)}]" if is_number(lo) and is_number(hi) else ""
        # the label beside the interval, on the side with more room
        right = max(wr, hi if is_number(hi) else wr)
        left = min(wr, lo if is_number(lo) else wr)
        if right <= 0.7:
            ax.annotate(f"{pct(wr)}{ci}{n}", (right, y), xytext=(8, 0), textcoords="offset points",
                        ha="left", va="center", fontsize=8.5)
        else:
            ax.annotate(f"{pct(wr)}{ci}{n}", (left, y), xytext=(-8, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=8.5)
    ax.axvline(0.5, color="#777777", lw=1, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(r.get("name", f"judge {i + 1}")) for i, r in enumerate(rows)][::-1], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.25)
    return save_png(fig, out_path)
