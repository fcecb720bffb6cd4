"""The overnight guarantee: ``kill -9`` a real ``prefloop generate`` at random moments, rerun, and nothing is lost
beyond the requests in flight, no id is written twice, and every line parses."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from generator.config import GenerateConfig
from generator.run import pair_id
from prefloop.sources import load_preferences, load_prompts

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 120
CONCURRENCY = 4


def write_prompts(path: Path) -> None:
    rows = [{"instruction": f"Answer question {i} briefly.", "input": f"Question {i}", "output": f"Answer {i}."}
            for i in range(N_PROMPTS)]
    path.write_text(json.dumps(rows))


def complete_lines(path: Path) -> list[dict]:
    """Every newline-terminated line must parse; a cut last line (no newline) is the only allowed damage."""
    if not path.exists():
        return []
    data = path.read_bytes()
    body = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prefloop", "generate", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_repeatedly(args: list[str], env: dict[str, str], out: Path, rng: random.Random, rounds: int,
                    check: Any = None, max_wait: float = 0.25) -> tuple[int, int]:
    """Start ``prefloop generate``, kill -9 it at a random point once it writes, up to ``rounds`` times; after each
    kill every complete line parses, no id is there twice and nothing written before is lost. ``(kills, lines)``."""
    kills = before = 0
    for _ in range(rounds):
        proc = start(args, env)
        # wait until it is writing (imports take a moment), then kill at a random point
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(complete_lines(out)) <= before and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max_wait))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        rows = complete_lines(out)  # raises if any complete line is broken
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "a duplicate id after a kill"
        assert len(rows) >= before, "a kill lost records that were already written"
        before = len(rows)
        if check is not None:
            check(kills, before)
    return kills, before


def test_kill_9_at_random_points_then_resume(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.latency = 0.02
    ollama_server.num_parallel = CONCURRENCY
    src, out = tmp_path / "prompts.json", tmp_path / "pairs.jsonl"
    write_prompts(src)
    env = dict(os.environ, OLLAMA_HOST=ollama_server.url, PYTHONPATH=str(ROOT))
    args = [str(src), "-o", str(out), "--model", "ollama:llama3.1:70b", "--concurrency", str(CONCURRENCY),
            "--quiet"]
    def in_flight_only(kills: int, written: int) -> None:
        # every answered request but those in flight at the kills is on disk
        assert ollama_server.count("/api/chat") - written <= kills * CONCURRENCY

    kills, before = kill_repeatedly(args, env, out, random.Random(7), rounds=5, check=in_flight_only)
    assert kills >= 3, "the generator finished before it could be killed three times"
    assert before < N_PROMPTS

    proc = start(args, env)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output.decode()[-2000:]

    rows = [json.loads(x) for x in out.read_text().splitlines()]  # now every line, the last one too
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == N_PROMPTS
    cfg = GenerateConfig(source=str(src), output=str(out), model="ollama:llama3.1:70b")
    prompts, _ = load_prompts(src)
    assert set(ids) == {pair_id(p, cfg) for p in prompts}
    pairs, report = load_preferences(out)
    assert report.kept == N_PROMPTS
    # nothing redone beyond the work in flight at each kill (each run also takes up to CONCURRENCY new jobs)
    chats = ollama_server.count("/api/chat")
    assert chats <= N_PROMPTS + kills * CONCURRENCY, (chats, kills)


def test_sigterm_and_ctrl_c_stop_cleanly(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.latency = 0.05
    src, out = tmp_path / "prompts.json", tmp_path / "pairs.jsonl"
    write_prompts(src)
    env = dict(os.environ, OLLAMA_HOST=ollama_server.url, PYTHONPATH=str(ROOT))
    args = [str(src), "-o", str(out), "--model", "ollama:llama3.1:70b", "--concurrency", "2", "--quiet"]
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = len(complete_lines(out))
        proc = start(args, env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(complete_lines(out)) < before + 3:
            time.sleep(0.01)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, output.decode()[-2000:]
        assert b"interrupted" in output
        summary = json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["total_in_output"] == len(complete_lines(out))
        assert out.read_bytes().endswith(b"\n")  # nothing half-written
        assert not (tmp_path / "pairs.jsonl.failures.jsonl").exists()  # cancelled work is not a failure
