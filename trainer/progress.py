"""Signs of life for work that takes more than a few seconds outside the training steps (those have
``trainer.metrics.LiveView``): the reference pass, a long evaluation, a model converted from GGUF.

On a terminal a rich bar with an ETA; otherwise (a log file, CI, ``prefloop run`` under nohup) a plain line every
tenth of the work or every 30 s, whichever comes first, so a log shows the run is alive. Everything goes through
the console the run was given, so a quiet console stays quiet.
"""

from __future__ import annotations

import time
from typing import Any

PLAIN_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class Ticker:
    """``with Ticker(console, "reference log-probs", "pairs") as t: t.start(total); ... t.advance(n)``: nothing
    shows until ``start`` (the work may turn out to be cached). With ``live``, a rich Progress already on screen
    (the training view), the bar is added to it instead of opening another."""

    def __init__(self, console: Any, label: str, unit: str, *, enabled: bool = True, live: Any = None) -> None:
        self.console, self.label, self.unit = console if enabled else None, label, unit
        self.live = live
        self.progress: Any = None
        self.task: Any = None
        self.total = self.done = 0

    def __enter__(self) -> "Ticker":
        return self

    def start(self, total: int) -> None:
        self.total, self.done = max(1, total), 0
        self.t0 = self.last_line = time.monotonic()
        self.last_share = 0.0
        if self.console is None:
            return
        if self.live is not None:
            self.progress = self.live
        elif self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(self.unit), TimeRemainingColumn(), console=self.console,
                                     transient=True)
            self.progress.start()
        if self.progress is not None:
            self.task = self.progress.add_task(self.label, total=self.total)

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)
            return
        if self.console is None:
            return
        now, share = time.monotonic(), self.done / self.total
        if share - self.last_share >= 0.1 or now - self.last_line >= PLAIN_EVERY_S or self.done == self.total:
            self.last_line, self.last_share = now, share
            left = (now - self.t0) * (self.total - self.done) / max(1, self.done)
            self.console.print(f"{self.label}: {self.done}/{self.total} {self.unit} ({share:.0%}), "
                               f"{_duration(now - self.t0)} so far, about {_duration(left)} left", highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.progress is None:
            return
        if self.progress is self.live:
            self.progress.remove_task(self.task)
        else:
            self.progress.stop()


def note(console: Any, text: str) -> Any:
    """A one-line status for work that cannot count its progress (loading, converting a GGUF): a spinner on a
    terminal, else the line once. Use as a context manager."""
    import contextlib

    if console is None:
        return contextlib.nullcontext()
    if console.is_terminal:
        return console.status(text)
    console.print(text, highlight=False)
    return contextlib.nullcontext()
