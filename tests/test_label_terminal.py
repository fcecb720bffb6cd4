"""The real ``prefloop label`` in a pseudo-terminal: label, ``kill -9`` while labelling, run it again, and it
resumes at the first unlabelled item with every label given before the kill; undo then reaches back across the
restart. Every wait has a timeout, so a screen that never comes up fails the test instead of hanging it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

pexpect = pytest.importorskip("pexpect")
pytest.importorskip("textual")

from judge.labels import LabelLog  # noqa: E402
from prefloop.sources import load_preferences  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 6


def spawn(items: Path, out: Path) -> "pexpect.spawn":
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="120", LINES="36")
    return pexpect.spawn(sys.executable, ["-m", "prefloop", "label", str(items), "-o", str(out), "--rater", "pat"],
                         cwd=str(ROOT), env=env, dimensions=(36, 120), timeout=60, encoding="utf-8")


def wait_for(what: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the label log")
        time.sleep(0.05)


def test_kill_9_while_labelling_then_resume_in_a_real_terminal(tmp_path: Path) -> None:
    items, out = tmp_path / "items.jsonl", tmp_path / "pairs.jsonl"
    items.write_text("".join(json.dumps({"prompt": f"Question {i}?", "answers": [f"Yes {i}.", f"No, never {i}."]})
                             + "\n" for i in range(N)))
    log = out.with_name(out.name + ".labels.jsonl")

    def labels() -> int:
        return len(LabelLog.read(log).labels)

    child = spawn(items, out)
    try:
        child.expect(f"item 1 of {N}")
        for n, key in enumerate("12t", start=1):
            child.send(key)
            wait_for(lambda: labels() == n)
    finally:
        child.kill(signal.SIGKILL)   # the terminal goes away mid-session: no chance to clean up
        child.close(force=True)
    assert labels() == 3
    assert len(load_preferences(out)[0]) == 2            # each pair was written with its label, not at exit

    child = spawn(items, out)
    try:
        child.expect(f"item 4 of {N}")                   # resumed at the first unlabelled item
        child.send("u")                                  # undo reaches back across the restart
        wait_for(lambda: LabelLog.read(log).undone == 1)
        for n, key in enumerate("1111", start=3):
            child.send(key)
            wait_for(lambda: labels() == n)
        child.expect(pexpect.EOF)                        # the last item labelled: the screen closes by itself
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    final = LabelLog.read(log)
    assert len(final.labels) == N and [lab.verdict for lab in final.labels].count("tie") == 0
    assert len(load_preferences(out)[0]) == N


def test_thumbs_kill_9_then_resume_in_a_real_terminal(tmp_path: Path) -> None:
    from judge.thumbs import ThumbLog
    from prefloop.sources import load_labelled

    answers, out = tmp_path / "answers.jsonl", tmp_path / "labelled.jsonl"
    answers.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                               for i in range(N)))
    log = out.with_name(out.name + ".labels.jsonl")

    def labels() -> int:
        return len(ThumbLog.read(log).labels)

    def thumbs() -> "pexpect.spawn":
        env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="120", LINES="36")
        return pexpect.spawn(sys.executable, ["-m", "prefloop", "label", str(answers), "-o", str(out), "--rater",
                                              "pat", "--mode", "thumbs"],
                             cwd=str(ROOT), env=env, dimensions=(36, 120), timeout=60, encoding="utf-8")

    child = thumbs()
    try:
        child.expect(f"answer 1 of {N}")
        for n, key in enumerate("12s", start=1):
            child.send(key)
            wait_for(lambda: labels() == n)
    finally:
        child.kill(signal.SIGKILL)
        child.close(force=True)
    assert [r.label for r in load_labelled(out)[0]] == [True, False]   # each row written with its key

    child = thumbs()
    try:
        child.expect(f"answer 4 of {N}")
        child.send("u")                                  # takes back the skip given before the kill
        wait_for(lambda: ThumbLog.read(log).undone == 1)
        for n, key in enumerate("1222", start=3):
            child.send(key)
            wait_for(lambda: labels() == n)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert [r.label for r in load_labelled(out)[0]] == [True, False, True, False, False, False]
