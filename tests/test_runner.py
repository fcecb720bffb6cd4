"""The durable job runner: resume, failures sidecar, drops, retries, bounded concurrency, clean interrupts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from prefloop.llm.base import ReplyInvalid, ServerFatal, Transient
from prefloop.runner import Drop, Job, Runner, run_jobs, sidecar


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i:03d}", data=i) for i in range(n)]


async def square(job: Job) -> dict:
    await asyncio.sleep(0.001)
    return {"value": job.data ** 2}


def test_writes_every_job_once_with_bounded_concurrency(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    active = peak = 0

    async def work(job: Job) -> dict:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.005)
        active -= 1
        return {"value": job.data * 3}

    summary = run_jobs(jobs(40) + jobs(5), work, out, concurrency=6)  # 5 repeated ids in the input
    rows = lines(out)
    assert sorted(r["id"] for r in rows) == [f"j{i:03d}" for i in range(40)]
    assert all(r["value"] == int(r["id"][1:]) * 3 for r in rows)
    assert peak == 6
    assert summary.written == 40 and summary.total == 40 and summary.failed == 0 and summary.done
    assert not sidecar(out, "failures.jsonl").exists()


def test_resume_skips_finished_and_repairs_cut_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    run_jobs(jobs(10), square, out, concurrency=3)
    with out.open("ab") as fh:  # a kill -9 in the middle of a write
        fh.write(b'{"id":"j010","val')
    calls: list[str] = []

    async def work(job: Job) -> dict:
        calls.append(job.id)
        return await square(job)

    summary = run_jobs(jobs(15), work, out, concurrency=3)
    assert sorted(calls) == [f"j{i:03d}" for i in range(10, 15)]
    assert summary.skipped_existing == 10 and summary.written == 5
    rows = lines(out)  # every line parses (the cut one is gone)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 15


def test_failures_go_to_sidecar_and_are_retried_on_rerun(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def flaky(job: Job) -> dict:
        if job.data % 3 == 0:
            raise ServerFatal(f"model missing for {job.id}")
        return {"value": job.data}

    s1 = run_jobs(jobs(9), flaky, out, concurrency=2, backoff_s=0)
    fails = lines(sidecar(out, "failures.jsonl"))
    assert s1.failed == 3 and s1.written == 6 and s1.failure_reasons == {"ServerFatal": 3}
    assert sorted(f["id"] for f in fails) == ["j000", "j003", "j006"]
    assert all(f["attempts"] == 1 and f["reason"] == "ServerFatal" and "model missing" in f["message"]
               for f in fails)

    # still failing: attempts accumulate, still one line per id
    s2 = run_jobs(jobs(9), flaky, out, concurrency=2, backoff_s=0)
    fails = lines(sidecar(out, "failures.jsonl"))
    assert s2.retried_failures == 3 and s2.skipped_existing == 6
    assert sorted(f["attempts"] for f in fails) == [2, 2, 2] and len(fails) == 3

    # fixed: they succeed and the sidecar goes away
    s3 = run_jobs(jobs(9), square, out, concurrency=2)
    assert s3.written == 3 and s3.done
    assert not sidecar(out, "failures.jsonl").exists()
    assert sorted(r["id"] for r in lines(out)) == [f"j{i:03d}" for i in range(9)]


def test_transient_errors_are_retried_within_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    seen: dict[str, int] = {}

    async def work(job: Job) -> dict:
        seen[job.id] = seen.get(job.id, 0) + 1
        if seen[job.id] <= 2:
            raise Transient("503 server busy")
        return {"tries": seen[job.id]}

    summary = run_jobs(jobs(4), work, out, concurrency=4, max_attempts=3, backoff_s=0.001)
    assert summary.written == 4 and summary.retries == 8
    assert all(r["tries"] == 3 for r in lines(out))

    out2 = tmp_path / "out2.jsonl"
    seen.clear()
    summary = run_jobs(jobs(2), work, out2, concurrency=2, max_attempts=2, backoff_s=0.001)
    assert summary.failed == 2 and summary.failure_reasons == {"Transient": 2}
    assert [f["attempts"] for f in lines(sidecar(out2, "failures.jsonl"))] == [2, 2]


def test_invalid_reply_keeps_raw_text_and_bugs_keep_location(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def work(job: Job) -> dict:
        if job.data == 0:
            raise ReplyInvalid("not JSON", raw="{score: ninety")
        return {"x": 1 / 0}

    run_jobs(jobs(2), work, out, concurrency=1)
    fails = {f["id"]: f for f in lines(sidecar(out, "failures.jsonl"))}
    assert fails["j000"]["raw"] == "{score: ninety" and fails["j000"]["reason"] == "ReplyInvalid"
    assert fails["j001"]["reason"] == "ZeroDivisionError" and "test_runner.py" in fails["j001"]["where"]


def test_drops_are_remembered_and_not_redone(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def work(job: Job) -> dict | Drop:
        return Drop("chosen identical to rejected", {"text": "same"}) if job.data < 2 else {"v": 1}

    s1 = run_jobs(jobs(5), work, out, concurrency=2)
    assert s1.dropped == {"chosen identical to rejected": 2} and s1.written == 3
    assert sorted(d["id"] for d in lines(sidecar(out, "dropped.jsonl"))) == ["j000", "j001"]
    s2 = run_jobs(jobs(5), work, out, concurrency=2)
    assert s2.skipped_dropped == 2 and s2.skipped_existing == 3 and s2.written == 0


def test_aborts_after_a_streak_of_failures(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    calls = 0

    async def down(job: Job) -> dict:
        nonlocal calls
        calls += 1
        raise ServerFatal("connection refused at 127.0.0.1:9")

    summary = run_jobs(jobs(100), down, out, concurrency=1, abort_after=5)
    assert summary.aborted and "5 failures in a row" in summary.aborted and calls == 5
    assert not summary.interrupted


def test_sigint_stops_cleanly_and_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    started = 0

    async def work(job: Job) -> dict:
        nonlocal started
        started += 1
        if started == 12:
            os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.01)
        return {"v": job.data}

    summary = run_jobs(jobs(50), work, out, concurrency=4)
    assert summary.interrupted and 0 < summary.written < 50
    rows = lines(out)
    assert len(rows) == summary.written == len({r["id"] for r in rows})
    summary = run_jobs(jobs(50), square, out, concurrency=4)
    assert summary.done and sorted(r["id"] for r in lines(out)) == [j.id for j in jobs(50)]


def test_second_run_on_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def both() -> None:
        gate = asyncio.Event()

        async def slow(job: Job) -> dict:
            await gate.wait()
            return {}

        first = asyncio.create_task(Runner(out, concurrency=1).run(jobs(1), slow))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="another run"):
            await Runner(out, concurrency=1).run(jobs(1), slow)
        gate.set()
        assert (await first).written == 1

    asyncio.run(both())


def test_progress_bar_shows_rate_retries_and_failures(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    tries: dict[str, int] = {}

    async def work(job: Job) -> dict:
        tries[job.id] = tries.get(job.id, 0) + 1
        if job.data == 0:
            raise ServerFatal("gone")
        if job.data == 1 and tries[job.id] == 1:
            raise Transient("busy")
        await asyncio.sleep(0.01)
        return {}

    run_jobs(jobs(6), work, tmp_path / "o.jsonl", concurrency=2, console=console, unit="pairs", backoff_s=0)
    text = buf.getvalue()
    assert "6/6" in text and "pairs/s" in text and "retries 1" in text and "failed 1" in text
    assert run_jobs(jobs(6), work, tmp_path / "q.jsonl", concurrency=2, console=Console(file=io.StringIO())).failed == 1


def test_a_broken_middle_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    from prefloop.records import RecordError

    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"a"}\n{"id":"b",\n{"id":"c"}\n')
    with pytest.raises(RecordError, match=r"out.jsonl:2"):
        run_jobs(jobs(3), square, out)
    assert out.read_text().count("\n") == 3  # nothing touched
