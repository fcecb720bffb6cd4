"""Ctrl-C and SIGTERM during training: finish the current step, write a checkpoint, return "interrupted".

A signal only sets a flag; the loop reads it at safe points (the end of a step, after each batch of the
reference pass), where every process takes the decision together (``Dist.any``), so all of them save the same
checkpoint instead of one stopping while the others wait for it. The same signal a second time stops at once
(``KeyboardInterrupt``) without saving; the last checkpoint stays. A different signal after the first (torchrun
sends SIGTERM to its workers after the terminal's SIGINT) does not count as the second.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Installs the handlers for the ``with`` block (main thread only; elsewhere the flag just stays unset)."""

    def __init__(self, *, announce: bool = True) -> None:
        self.requested: str | None = None   # the name of the first signal
        self.seen: set[int] = set()
        self.announce = announce
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in self.seen:
            raise KeyboardInterrupt
        self.seen.add(signum)
        if self.requested is None:
            self.requested = signal.Signals(signum).name
            if self.announce:
                os.write(2, f"\n{self.requested}: stopping after this step and saving a checkpoint "
                            "(press Ctrl-C again to stop at once without one)\n".encode())

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
