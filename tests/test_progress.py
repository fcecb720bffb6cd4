"""Issue 9, item 13: long work shows progress with an ETA, and plain lines when there is no terminal."""

from __future__ import annotations

import io

from rich.console import Console

from prefloop.progress import Progress


def test_plain_lines_with_counts_rate_and_time_left_when_there_is_no_terminal() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with Progress(console, 40, "reference log-probs", unit="pairs", every_s=3600) as bar:
        for _ in range(40):
            bar.advance()
    lines = [line for line in buf.getvalue().splitlines() if line]
    assert len(lines) == 10                                     # one line a tenth, not one per item
    assert lines[0].startswith("reference log-probs: 4/40 pairs (10%, ") and "left" in lines[0]
    assert lines[-1].startswith("reference log-probs: 40/40 pairs") and "left" not in lines[-1]


def test_a_resumed_run_counts_only_its_own_work_in_the_rate() -> None:
    buf = io.StringIO()
    bar = Progress(Console(file=buf, force_terminal=False), 100, "judging", done=90)
    assert bar.rate() == 0.0 and bar.eta_s() is None
    bar.advance(5)
    assert bar.completed == 95 and bar.rate() > 0 and bar.eta_s() is not None
    assert Progress(None, 10, "quiet").enabled is False
