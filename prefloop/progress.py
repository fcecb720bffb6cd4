"""A sign of life for every step that can take more than a few seconds: a bar with rate and ETA on a terminal,
plain lines when there is none (a log file, ``nohup``, CI), so an overnight run never sits silent.

Plain mode prints a line at each tenth of the work and at least every ``every_s`` seconds, with the count, the
rate and the time left, which reads well in a log read in the morning. Everything goes through the console the
work was given, so a quiet console stays quiet. ``note()`` is the same for work that cannot count itself
(loading, converting a GGUF): a spinner on a terminal, else the line once.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``advance(n)`` as work finishes; ``close()`` at the end (or use it as a context manager).

    ``total=None`` shows nothing until ``start(total)`` (the work may turn out to be cached). ``extra()`` may
    return a short text shown after the figures (retries, failures). ``done`` is work already finished before this
    run (a resumed run), so the rate and ETA count only what this run does. ``live``: a rich Progress already on
    screen (the training view); the bar is added to it instead of opening another.
    """

    def __init__(self, console: Any, total: int | None, description: str, *, unit: str = "items", done: int = 0,
                 enabled: bool = True, every_s: float = 60.0, extra: Callable[[], str] | None = None,
                 live: Any = None):
        self.console, self.description, self.unit = console, description, unit
        self.enabled = enabled and console is not None
        self.every_s, self.extra, self.live = every_s, extra, live
        self.bar: Any = None
        self.total, self.completed = 0, done
        if total is not None:
            self.start(total, done)

    def start(self, total: int, done: int = 0) -> None:
        """Begin showing ``total`` units of work (``done`` of them finished already)."""
        self.total, self.completed, self.start_done = total, done, done
        self.t0 = time.monotonic()
        self._last_line, self._last_tenth = self.t0, done * 10 // max(1, total)
        if not self.enabled:
            return
        if self.live is not None:
            self.bar = self.live
        elif getattr(self.console, "is_terminal", False):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TaskProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                           TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
                           console=self.console, transient=False, refresh_per_second=4)
            self.bar.start()
        if self.bar is not None:
            self.task = self.bar.add_task(self.description, total=total, completed=done, rate="", extra="")

    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.completed - self.start_done) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return (self.total - self.completed) / rate if rate > 0 else None

    def advance(self, n: int = 1) -> None:
        self.completed = min(self.total, self.completed + n) if self.total else self.completed + n
        if not self.enabled or not self.total:
            return
        extra = self.extra() if self.extra else ""
        rate = self.rate()
        rate_text = f"{rate:.2f} {self.unit}/s" if rate >= 0.1 else f"{60 * rate:.1f} {self.unit}/min"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.completed, rate=rate_text, extra=extra)
            return
        now, tenth = time.monotonic(), self.completed * 10 // max(1, self.total)
        if tenth > self._last_tenth or now - self._last_line >= self.every_s or self.completed == self.total:
            self._last_tenth, self._last_line = tenth, now
            eta = self.eta_s()
            left = f", about {_duration(eta)} left" if eta is not None and self.completed < self.total else ""
            share = self.completed / max(1, self.total)
            self.console.print(f"{self.description}: {self.completed}/{self.total} {self.unit} ({share:.0%}, "
                               f"{rate_text}{left})" + (f"; {extra}" if extra else ""), highlight=False)

    def close(self) -> None:
        if self.bar is self.live and self.bar is not None:
            self.bar.remove_task(self.task)
        elif self.bar is not None:
            self.bar.stop()
        self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def note(console: Any, text: str) -> Any:
    """A one-line status for work that cannot count its progress (loading, converting a GGUF): a spinner on a
    terminal, else the line once. Use as a context manager."""
    import contextlib

    if console is None:
        return contextlib.nullcontext()
    if getattr(console, "is_terminal", False):
        return console.status(text)
    console.print(text, highlight=False)
    return contextlib.nullcontext()
