"""The judge's report: headline table, a win-rate plot, judge diagnostics, agreement, side-by-side examples.

Built with ``prefloop.report.Report`` so the Markdown and HTML say the same thing; ``build_report`` returns the
``Report`` so the loop can embed it in its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judge.prompts import judge_prompt_text
from prefloop.report import Report, fmt, is_number, pct, pyplot, save_png


def build_report(out_dir: Path, results: dict[str, Any], answers: list[dict[str, Any]],
                 per_judge_rows: dict[str, dict[str, dict[str, Any]]], n_examples: int = 6) -> Report:
    rep = Report(title="Held-out win rate",
                 subtitle=f"policy `{results['policy']}` against reference `{results['reference']}` on "
                          f"{results['n_prompts']} held-out prompts from `{results['prompts']}`")
    for w in results.get("warnings", []):
        rep.warning(w)
    head = results["judges"][results["judge"]]
    if head.get("n"):
        rep.paragraph(f"**{pct(head['win_rate'])}** win rate (95% CI {pct(head['ci_low'])}–{pct(head['ci_high'])}, "
                      f"prompt-level bootstrap) by judge `{results['judge']}`: the share of prompts where the judge "
                      "preferred the trained model, ties counting half. Each prompt was judged in both orders; "
                      "orders that disagree count as a tie. 50% = no better than the reference.")
    rows = []
    for name, s in results["judges"].items():
        d = s.get("diagnostics") or {}
        rows.append([name, pct(s.get("win_rate")), f"{pct(s.get('ci_low'))}–{pct(s.get('ci_high'))}",
                     pct(s.get("lc_win_rate")), s.get("wins"), s.get("ties"), s.get("losses"), s.get("n"),
                     pct(d.get("parse_rate")), pct(d.get("position_consistency")),
                     pct(d.get("first_position_rate")), pct(d.get("longer_pick_rate"))])
    rep.heading("Results")
    rep.table(rows, headers=["judge", "win rate", "95% CI", "LC win rate", "wins", "ties", "losses", "n",
                             "parsed", "position-consistent", "picks first", "picks longer"])
    plot = plot_win_rates([{"name": name, "win_rate": s.get("win_rate"), "ci_low": s.get("ci_low"),
                            "ci_high": s.get("ci_high"), "n": s.get("n")} for name, s in results["judges"].items()],
                          out_dir / "win_rate.png")
    if plot is not None:
        rep.image(plot, caption="win rate with its 95% interval per judge; the dashed line is 50%")
    rep.paragraph("LC win rate: AlpacaEval's length-controlled win rate (a logistic fit of the outcome on the "
                  "normalised length difference, read at equal lengths), fitted on this set. *Picks first* near "
                  "50% means no position bias; *picks longer* far above 50% means the judge rewards length.")
    d = head.get("diagnostics") or {}
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
    if results.get("kappa"):
        rep.heading("Agreement between judges", 3)
        rep.table([[k["a"], k["b"], fmt(k["kappa"]), pct(k["agreement"]), k["n"]] for k in results["kappa"]],
                  headers=["judge", "judge", "Cohen's κ", "agreement", "prompts"])
    rob = results.get("robustness")
    if rob:
        rep.heading("Robustness to adversarial answers", 3)
        rep.paragraph(f"On {rob['n']} prompts the reference answer was edited and judged again by `{rob['judge']}`. "
                      "A trustworthy judge keeps its verdict (low flip rate) and never lets the edited answer win.")
        rep.table([[name, pct(rob[name]["flip_rate"]), pct(rob[name]["attacked_wins"])]
                   for name in ("injection", "longer", "empty")],
                  headers=["edit", "verdicts flipped", "edited answer wins"])
    rep.heading("Examples")
    rows_by_id = per_judge_rows.get(results["judge"], {})
    for a in pick_examples(answers, rows_by_id, n_examples):
        r = rows_by_id.get(a["id"])
        note = None
        if r is not None:
            reasons = "; ".join(f"{g['first']} first: {g['pick'] or 'unparsed'} ({g['reason'][:200]})"
                                for g in r["games"])
            note = f"verdict: {r['winner'] or 'unparsed'}" + (f" — {reasons}" if reasons else "")
        rep.example(f"prompt {a['id']}", judge_prompt_text(a["prompt"]),
                    [("reference", a["reference_answer"]), ("policy", a["policy_answer"])], note=note)
    return rep


def pick_examples(answers: list[dict[str, Any]], rows: dict[str, dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """A few of each outcome (wins, losses, ties) in prompt order, so the examples are not all one kind."""
    buckets: dict[str, list[dict[str, Any]]] = {"win": [], "loss": [], "tie": []}
    for a in answers:
        r = rows.get(a["id"])
        if r is not None:
            buckets[r["outcome"]].append(a)
    picked: list[dict[str, Any]] = []
    while len(picked) < n and any(buckets.values()):
        for key in ("win", "loss", "tie"):
            if buckets[key] and len(picked) < n:
                picked.append(buckets[key].pop(0))
    return picked


def write_report(out_dir: Path, results: dict[str, Any], answers: list[dict[str, Any]],
                 per_judge_rows: dict[str, dict[str, dict[str, Any]]], n_examples: int = 6) -> tuple[Path, Path]:
    rep = build_report(out_dir, results, answers, per_judge_rows, n_examples)
    return rep.write(out_dir, "report")


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
