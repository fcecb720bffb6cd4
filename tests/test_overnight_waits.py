"""Issue 9, item 2: nothing waits forever. A server that accepts connections but never answers stops the run with
a message and a non-zero exit within the configured bounds; one deadline covers all of a job's attempts; the
failure sidecar says how many requests a failed prompt cost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefloop.runner import Job, Runner

ROOT = Path(__file__).resolve().parents[1]


def write_prompts(path: Path, n: int = 6) -> None:
    path.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "", "output": f"{i}."} for i in range(n)]))


def test_a_server_that_never_answers_stops_the_run_with_a_message(ollama_server: Any, tmp_path: Path) -> None:
    ollama_server.fail("hang", times=-1, seconds=600)        # accepts /api/chat and says nothing
    src, out = tmp_path / "prompts.json", tmp_path / "pairs.jsonl"
    write_prompts(src)
    env = dict(os.environ, OLLAMA_HOST=ollama_server.url, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "prefloop", "generate", str(src), "-o", str(out), "--model", "ollama:llama3.1:70b",
           "--timeout", "1", "--stall-s", "4", "--job-timeout-s", "30", "--concurrency", "2", "-q"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "no answer from any request" in proc.stderr and "4 s" in proc.stderr
    assert elapsed < 60  # bounded by stall_s, far below timeout x attempts x runner tries (8 x 3 x 1 s + backoff)
    summary = json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())
    assert summary["status"] == "failed" and "no answer" in summary["aborted"]


def test_one_deadline_covers_every_attempt_of_a_job(tmp_path: Path) -> None:
    calls = []

    async def never(job: Job) -> dict:
        calls.append(job.id)
        await asyncio.sleep(3600)
        return {}

    async def go():
        runner = Runner(tmp_path / "out.jsonl", concurrency=1, max_attempts=5, backoff_s=0, job_timeout_s=0.3)
        return await runner.run([Job("a")], never)

    t0 = time.monotonic()
    summary = asyncio.run(go())
    assert time.monotonic() - t0 < 5 and summary.failed == 1 and summary.failure_reasons == {"JobTimeout": 1}
    entry = json.loads((tmp_path / "out.jsonl.failures.jsonl").read_text().splitlines()[0])
    assert entry["reason"] == "JobTimeout" and "0.3 s" in entry["message"]


def test_the_failure_sidecar_counts_requests_as_well_as_attempts(ollama_server: Any, tmp_path: Path) -> None:
    from generator.config import GenerateConfig
    from generator.run import generate
    from prefloop.llm import make_client
    from prefloop.llm.retry import RetryPolicy

    ollama_server.fail("status", status=503, times=-1)
    src, out = tmp_path / "prompts.json", tmp_path / "pairs.jsonl"
    write_prompts(src, n=1)
    cfg = GenerateConfig(source=str(src), output=str(out), model="ollama:m", max_attempts=2, backoff_s=0,
                         quiet=True)
    client = make_client("ollama:m", host=ollama_server.url, retry=RetryPolicy(attempts=3, base_delay=0.01))
    ollama_server.add_model("m:latest")
    generate(cfg, clients={"ollama:m": client})
    entry = json.loads((tmp_path / "pairs.jsonl.failures.jsonl").read_text().splitlines()[0])
    assert entry["attempts"] == 2 and entry["requests"] == 6 == ollama_server.count("/api/chat")


def test_a_prompt_answered_request_by_request_is_no_stall(ollama_server: Any, tmp_path: Path, monkeypatch) -> None:
    """rank asks K samples and K scores per prompt: the prompt finishes long after its first answer. Each answer
    shows the server alive, so only a silent server trips the stall watchdog (issue 17: a round's local sampling
    and scoring at the quickstart's size stopped with "no answer from any request" while answers kept coming)."""
    from generator.config import GenerateConfig
    from generator.run import generate

    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.latency, ollama_server.num_parallel = 0.4, 1   # 4 samples + 4 scores: ~3 s per prompt
    src = tmp_path / "prompts.json"
    write_prompts(src, n=2)
    cfg = GenerateConfig(source=str(src), output=str(tmp_path / "pairs.jsonl"), strategy="rank",
                         models=["ollama:llama3.1:70b"], judge="ollama:judge", k=4, concurrency=1, stall_s=1.5,
                         quiet=True)
    result = generate(cfg)
    assert result.aborted is None, result.aborted
    assert result.written + sum(result.dropped.values()) == 2
