"""The trainer's part of a report: training curves and the last logged metrics, read from the files a run writes
(``metrics.jsonl``, ``train_summary.json``), so ``prefloop run`` shows them without knowing their names.

The curves are diagnostics, not the result: a falling loss does not mean people prefer the answers (the judge's
held-out win rate does).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefloop.jsonl import read_jsonl
from prefloop.report import Report, is_number, load_json, pyplot, save_png

FINAL_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
                 "logps/chosen", "logps/rejected",
                 # the objectives' own, under TRL's names: RPO/ORPO's NLL, KTO's KL estimate, ORPO's odds ratio
                 "nll", "nll_loss", "kl", "log_odds_ratio", "log_odds_chosen")

# (panel title, [(metric name, label)]): TRL's metric names, as trainer.metrics logs them
TRAINING_PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("loss", [("loss", "loss")]),
    ("reward margin (chosen − rejected)", [("rewards/margins", "margin")]),
    ("reward accuracy", [("rewards/accuracies", "accuracy")]),
    ("log-probs", [("logps/chosen", "chosen"), ("logps/rejected", "rejected")]),
]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The trainer's ``metrics.jsonl`` rows (each has ``step`` and ``split``: train or eval). A torn last line
    (a killed run) is skipped."""
    return [row for row in read_jsonl(path) if isinstance(row, dict) and "split" in row]


def _series(rows: list[dict[str, Any]], split: str, metric: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(metric)
        if row["split"] != split or not is_number(value) or math.isnan(float(value)):
            continue
        xs.append(float(row.get("step", i)))
        ys.append(float(value))
    return xs, ys


def plot_training_metrics(metrics: str | Path | list[dict[str, Any]], out_path: str | Path,
                          panels: list[tuple[str, list[tuple[str, str]]]] | None = None,
                          title: str | None = None) -> Path | None:
    """A 2×2 PNG of loss, reward margin, reward accuracy and chosen/rejected log-probs, train (solid) and eval
    (dashed, dots) against the optimizer step. Returns None when the file holds none of these metrics."""
    rows = read_metrics(metrics) if isinstance(metrics, (str, Path)) else metrics
    panels = panels or TRAINING_PANELS
    have = [p for p in panels if any(_series(rows, s, m)[0] for m, _ in p[1] for s in ("train", "eval"))]
    if not have:
        return None
    plt = pyplot()
    cols = 2 if len(have) > 1 else 1
    nrows = math.ceil(len(have) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.4 * nrows), squeeze=False)
    colors = ["#2f6fde", "#d9534f", "#3a9d5d", "#8e5bd6"]
    for ax, (panel_title, metrics_in_panel) in zip(axes.flat, have):
        for i, (metric, label) in enumerate(metrics_in_panel):
            color = colors[i % len(colors)]
            xs, ys = _series(rows, "train", metric)
            if xs:
                ax.plot(xs, ys, "-", color=color, lw=1.4, alpha=0.9, label=f"train {label}")
            xs, ys = _series(rows, "eval", metric)
            if xs:
                ax.plot(xs, ys, "--o", color=color, lw=1.2, ms=3.5, label=f"eval {label}")
        if metrics_in_panel[0][0] == "rewards/accuracies":
            ax.set_ylim(-0.02, 1.02)
            ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
        if metrics_in_panel[0][0] == "rewards/margins":
            ax.axhline(0.0, color="#999999", lw=0.8, ls=":")
        ax.set_title(panel_title, fontsize=11)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(have):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12)
    return save_png(fig, out_path)


def add_training_section(report: Report, output_dir: str | Path, plots_dir: str | Path) -> None:
    """Curves, the last train and eval values, how the run ended, and a warning when the held-out chosen
    log-probs fell (likelihood displacement)."""
    out = Path(output_dir)
    report.heading("Training (diagnostics, not the result)")
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        report.paragraph("No training metrics yet.")
        return
    rows = read_metrics(metrics)
    summary = load_json(out / "train_summary.json") or {}
    objective = str(summary.get("objective") or "dpo").upper()
    png = plot_training_metrics(rows, Path(plots_dir) / "training.png")
    if png:
        report.image(png, caption=f"{objective} loss, reward margin (chosen − rejected), reward accuracy and the policy's "
                                  "log-probs of chosen and rejected answers; solid: training batches, dashed: "
                                  "held-out pairs")
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        last.setdefault(row["split"], {}).update({k: v for k, v in row.items() if k in FINAL_METRICS or k == "step"})
    table = [{"metric": m, "train (last)": last.get("train", {}).get(m), "eval (last)": last.get("eval", {}).get(m)}
             for m in ("step",) + FINAL_METRICS if any(m in last.get(s, {}) for s in ("train", "eval"))]
    if table:
        report.table(table)
    facts = {k: summary.get(k) for k in ("objective", "status", "reason", "steps", "final_model_dir")
             if summary.get(k)}
    if facts:
        report.key_values(facts)
    evals = [r["logps/chosen"] for r in rows if r["split"] == "eval" and is_number(r.get("logps/chosen"))]
    # the same held-out pairs at every eval, so a drop is the model's, not a different batch's
    if len(evals) >= 2 and evals[-1] < evals[0] - max(1.0, 0.05 * abs(evals[0])):
        report.warning("the policy's log-prob of the chosen answers fell during training (both sides pushed down): "
                       "a known DPO failure that can make answers worse even while the margin grows; try a larger "
                       "beta, a lower lr, or rpo_alpha > 0")
