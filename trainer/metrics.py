"""Metrics: averaged over micro-batches, written one JSON line per step, shown live on a terminal.

Names follow TRL (``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``,
``logps/chosen``, ``logps/rejected``, ``grad_norm``, ``learning_rate``) plus ``tokens/s``; every row also has
``step``, ``epoch`` and ``split`` (``train`` or ``eval``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from prefloop.jsonl import JsonlAppender, read_jsonl, write_jsonl


class Averager:
    """Weighted means of named values (weights: pairs in each micro-batch)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.weight: dict[str, float] = defaultdict(float)

    def add(self, values: dict[str, float], weight: float) -> None:
        for k, v in values.items():
            self.total[k] += v * weight
            self.weight[k] += weight

    def means(self) -> dict[str, float]:
        return {k: self.total[k] / self.weight[k] for k in self.total if self.weight[k] > 0}


class NoLog:
    """What the processes other than rank 0 log to: nothing (rank 0 writes the reduced metrics)."""

    def append(self, obj: Any) -> None:
        pass

    def __enter__(self) -> "NoLog":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_metrics(path: Path, *, keep_until_step: int | None, enabled: bool = True) -> JsonlAppender | NoLog:
    """Open ``metrics.jsonl`` for appending; on resume, rows after the checkpoint's step are dropped first so the
    log reads like one uninterrupted run. ``enabled`` False: a log that writes nothing."""
    if not enabled:
        return NoLog()
    if keep_until_step is not None and path.exists():
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= keep_until_step]
        write_jsonl(path, rows)
    elif keep_until_step is None and path.exists():
        path.unlink()
    return JsonlAppender(path)


class LiveView:
    """A rich progress bar with the latest loss, accuracy, margin and speed on a terminal; otherwise a plain line
    every tenth of the run."""

    def __init__(self, console: Any, total: int, enabled: bool, start: int = 0) -> None:
        self.console = console
        self.progress = None
        self.total = total
        self.every = max(1, total // 10)  # plain log lines when there is no live view
        if enabled and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> "LiveView":
        if self.progress:
            self.progress.start()
        return self

    def update(self, step: int, row: dict[str, Any]) -> None:
        parts = [f"loss {row['loss']:.4f}"]
        if "rewards/accuracies" in row:
            parts.append(f"acc {row['rewards/accuracies']:.2f} margin {row['rewards/margins']:+.3f}")
        parts.append(f"{row.get('tokens/s', 0):,.0f} tok/s")
        if self.progress:
            self.progress.update(self.task, completed=step, info="  ".join(parts))
        elif self.console is not None and self.total and (step % self.every == 0 or step == self.total):
            self.console.print(f"step {step}/{self.total}  " + "  ".join(parts), highlight=False)

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()
