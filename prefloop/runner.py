"""A durable async job runner: the part of ``prefloop generate`` and ``prefloop judge`` that runs for hours.

Each job has a deterministic id. A pool of ``concurrency`` workers takes jobs in order and awaits the work
function; every finished result is appended to the output JSONL and flushed at once (one ``write`` per line), so
``kill -9`` loses at most the jobs in flight. On start the runner reads what is already there:

- ``OUT`` (a cut last line is tolerated and repaired): those ids are done and skipped;
- ``OUT.dropped.jsonl``: jobs that finished without a record (e.g. both sides identical), with the reason;
  they are done too, so a rerun does not pay for them again;
- ``OUT.failures.jsonl``: jobs that failed earlier, with the reason and how many attempts they had; they are
  retried, and the sidecar is compacted (one line per id still failing) at start and at the end.

A lock file (``OUT.lock``, ``flock``) stops two runs from writing the same output. Ctrl-C or SIGTERM cancels
the jobs in flight and returns a summary marked ``interrupted``; nothing is half-written because each line is a
single write. After ``abort_after`` failures in a row (server gone, model missing) the run stops early instead
of burning through every remaining job.

The runner owns job retries and how many jobs are in flight; nothing below it keeps its own limit on jobs. How
many requests one job can cost, at most (defaults in brackets)::

    max_attempts [3]              the runner's tries of the job, for RETRYABLE errors only
      x requests the job makes    rewrite 1; contrast 2; rank k + k; a judged prompt 2 orders
      x re-asks per request       judge.core: ``attempts`` [3] when a verdict does not parse; 1 elsewhere
      x RetryPolicy.attempts [8]  the client's transport retries (about a minute of backoff)

A server that never answers costs ``timeout`` per transport attempt, so with these defaults one job can wait
``3 x 8 x timeout``; ``abort_after`` stops the run after that many jobs failed in a row.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from prefloop.files import Lock
from prefloop.jsonl import JsonlAppender, iter_jsonl, write_jsonl
from prefloop.llm.base import ReplyInvalid, Transient
from prefloop.progress import Progress

# Worth another attempt inside the same run (the clients already retry; this covers a flaky minute).
RETRYABLE: tuple[type[BaseException], ...] = (Transient, TimeoutError, ConnectionError)


class JobTimeout(Exception):
    """A job's deadline passed before any of its attempts finished (counted and retried on the next run)."""


@dataclass
class Job:
    """One unit of work: ``id`` decides skipping and de-duplication; ``data`` is whatever the work needs."""

    id: str
    data: Any = None


@dataclass
class Drop:
    """A job that finished without a record, and why (counted, remembered, not retried)."""

    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What one run did. ``dropped``/``failure_reasons`` count this run; ``*_before`` what earlier runs left."""

    total: int = 0
    skipped_existing: int = 0
    skipped_dropped: int = 0
    written: int = 0
    failed: int = 0
    dropped: Counter = field(default_factory=Counter)
    failure_reasons: Counter = field(default_factory=Counter)
    retries: int = 0
    retried_failures: int = 0     # jobs that had failed in an earlier run and were tried again
    interrupted: bool = False
    aborted: str | None = None
    elapsed_s: float = 0.0

    @property
    def done(self) -> bool:
        return not self.interrupted and not self.aborted and self.failed == 0

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "written": self.written, "failed": self.failed,
                "dropped": dict(self.dropped), "failure_reasons": dict(self.failure_reasons),
                "skipped_existing": self.skipped_existing, "skipped_dropped": self.skipped_dropped,
                "retries": self.retries, "retried_failures": self.retried_failures,
                "interrupted": self.interrupted, "aborted": self.aborted,
                "elapsed_s": round(self.elapsed_s, 3)}


def sidecar(output: str | Path, kind: str) -> Path:
    """``OUT.failures.jsonl``, ``OUT.dropped.jsonl``, ``OUT.lock`` beside the output."""
    output = Path(output)
    return output.with_name(f"{output.name}.{kind}")


def finished_ids(path: Path, redo: Callable[[dict[str, Any]], bool] | None = None) -> set[str]:
    """Ids already in a JSONL output (a cut last line is ignored; a broken middle line is an error). An id whose
    last record ``redo`` accepts is not finished: it is asked again (a judge's unparsed verdict)."""
    done: set[str] = set()
    if not path.exists():
        return done
    for _, obj in iter_jsonl(path):
        if isinstance(obj, dict) and "id" in obj:
            if redo is not None and redo(obj):
                done.discard(str(obj["id"]))
            else:
                done.add(str(obj["id"]))
    return done


def read_sidecar(path: Path) -> dict[str, dict[str, Any]]:
    """The last entry per id of a failures/dropped sidecar."""
    if not path.exists():
        return {}
    return {str(obj["id"]): obj for _, obj in iter_jsonl(path) if isinstance(obj, dict) and "id" in obj}


Work = Callable[[Job], Awaitable["dict[str, Any] | Drop"]]


class Runner:
    """Runs ``work(job)`` for every job not done yet and stores each outcome durably, with progress on the console
    (a bar on a terminal, plain lines in a log; ``progress=False`` for none).

    ``work`` returns the record to append (its ``id`` is set to the job's) or a ``Drop``. Exceptions in
    ``retry_on`` are retried up to ``max_attempts`` times with exponential backoff and jitter; any other
    exception, or the last retryable one, is recorded as a failure (reason, message, attempts, raw reply for
    ``ReplyInvalid``) and retried on the next run. Work functions may call ``note_retries(n)`` to count retries
    their client made, so the progress bar shows them, and ``note_answer()`` for each request answered, so a job of
    many requests does not look like a stalled server.
    """

    def __init__(self, output: str | Path, *, concurrency: int = 4, max_attempts: int = 3,
                 backoff_s: float = 1.0, backoff_max_s: float = 30.0, abort_after: int = 25,
                 job_timeout_s: float | None = None, stall_s: float | None = None,
                 retry_on: tuple[type[BaseException], ...] = RETRYABLE, fsync: bool = False,
                 console: Any = None, progress: bool | None = None, description: str = "jobs",
                 unit: str = "items", redo: Callable[[dict[str, Any]], bool] | None = None):
        """``job_timeout_s``: one deadline for all attempts of a job (its backoff included); ``stall_s``: stop the
        whole run when no job has finished for that long while jobs are waiting (a server that accepts
        connections and answers nothing); None: no limit. ``redo(record)``: a record written earlier that is not
        final (a verdict that never parsed) is run again; the newer record is appended after it."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.output = Path(output)
        self.failures_path = sidecar(self.output, "failures.jsonl")
        self.dropped_path = sidecar(self.output, "dropped.jsonl")
        self.concurrency, self.max_attempts = concurrency, max(1, max_attempts)
        self.backoff_s, self.backoff_max_s, self.abort_after = backoff_s, backoff_max_s, abort_after
        self.job_timeout_s, self.stall_s = job_timeout_s, stall_s
        self.retry_on, self.fsync = retry_on, fsync
        self.console, self.progress, self.description, self.unit = console, progress, description, unit
        self.redo = redo
        self.summary = RunSummary()
        self._streak = 0
        self._failed_before: dict[str, dict[str, Any]] = {}   # from earlier runs (the sidecar, compacted)
        self._failed_now: dict[str, dict[str, Any]] = {}      # this run's
        self._succeeded: set[str] = set()
        self._last_ok = time.monotonic()   # when a job last finished or a request was answered (note_answer)

    def note_retries(self, n: int = 1) -> None:
        self.summary.retries += max(0, n)

    def note_answer(self) -> None:
        """One request of a job was answered: the server is alive, so the stall clock starts again. A job that
        makes many requests (K samples and K scores per prompt, batched with other prompts') may finish long
        after its first answer."""
        self._last_ok = time.monotonic()

    # ----------------------------------------------------------------------------------------------- run

    async def run(self, jobs: Iterable[Job], work: Work) -> RunSummary:
        """Run every pending job; returns the summary (also when interrupted: check ``interrupted``)."""
        s = self.summary = RunSummary()
        self._failed_before, self._failed_now, self._succeeded = {}, {}, set()
        t0 = time.perf_counter()
        with Lock(self.output):
            done = finished_ids(self.output, self.redo)
            dropped_before = read_sidecar(self.dropped_path)
            failed_before = {k: v for k, v in read_sidecar(self.failures_path).items() if k not in done}
            pending: list[Job] = []
            seen: set[str] = set()
            for job in jobs:
                if job.id in seen:
                    continue
                seen.add(job.id)
                if job.id in done:
                    s.skipped_existing += 1
                elif job.id in dropped_before:
                    s.skipped_dropped += 1
                else:
                    pending.append(job)
            s.total = len(seen)
            s.retried_failures = sum(1 for j in pending if j.id in failed_before)
            self._failed_before = failed_before
            if self.failures_path.exists():  # compact now: drop ids finished since, one line per id
                write_jsonl(self.failures_path, list(failed_before.values()))
            bar = Progress(self.console, s.total, self.description, unit=self.unit,
                           done=s.skipped_existing + s.skipped_dropped,
                           enabled=self.progress if self.progress is not None else self.console is not None,
                           extra=lambda: f"retries {s.retries} · failed {s.failed} · dropped {sum(s.dropped.values())}")
            try:
                with JsonlAppender(self.output, fsync=self.fsync) as out, \
                        JsonlAppender(self.failures_path, fsync=self.fsync) as fails, \
                        JsonlAppender(self.dropped_path, fsync=self.fsync) as drops:
                    await self._pool(pending, work, out, fails, drops, bar)
            finally:
                bar.close()
                self._compact_failures()
                s.elapsed_s = time.perf_counter() - t0
        return s

    async def _pool(self, pending: list[Job], work: Work, out: JsonlAppender, fails: JsonlAppender,
                    drops: JsonlAppender, bar: Progress) -> None:
        s = self.summary
        it = iter(pending)  # ids are unique here: run() de-duplicated them
        stop = asyncio.Event()
        self._last_ok = time.monotonic()  # when a job last finished with a record or a drop, or a request answered

        async def watchdog() -> None:
            """Stop the run when nothing has come back for ``stall_s`` (failures do not count as answers)."""
            while True:
                await asyncio.sleep(min(1.0, self.stall_s / 4))
                if time.monotonic() - self._last_ok > self.stall_s:
                    s.aborted = (f"no answer from any request for {self.stall_s:g} s: the server accepts connections "
                                 "but does not reply (is it stuck, or loading a model too large for it?); finished "
                                 "work is kept, run the same command again once it answers")
                    stop.set()
                    return

        async def worker() -> None:
            for job in it:  # one shared iterator: each job is taken by exactly one worker
                if stop.is_set():
                    return
                outcome = await self._attempt(job, work)
                if not isinstance(outcome, BaseException):
                    self._last_ok = time.monotonic()
                if isinstance(outcome, Drop):
                    drops.append({"id": job.id, "reason": outcome.reason, **outcome.detail})
                    s.dropped[outcome.reason] += 1
                    self._succeeded.add(job.id)
                    self._streak = 0
                elif isinstance(outcome, BaseException):
                    entry = self._failure_entry(job, outcome)
                    fails.append(entry)
                    self._failed_now[job.id] = entry
                    s.failed += 1
                    s.failure_reasons[entry["reason"]] += 1
                    self._streak += 1
                    if self.abort_after and self._streak >= self.abort_after:
                        s.aborted = (f"{self._streak} failures in a row (last: {entry['reason']}: "
                                     f"{entry['message'][:200]})")
                        stop.set()
                        return
                else:
                    out.append({"id": job.id, **{k: v for k, v in outcome.items() if k != "id"}})
                    s.written += 1
                    self._succeeded.add(job.id)
                    self._streak = 0
                bar.advance()

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(pending))))]
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no support
                pass
        stopper = asyncio.create_task(stop.wait())
        watch = [asyncio.create_task(watchdog())] if self.stall_s and pending else []
        try:
            waiting = set(tasks) | {stopper}
            while tasks and not stop.is_set():
                finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    if t is not stopper:
                        tasks.remove(t)
                        t.result()  # a bug in the runner itself surfaces here
            if stop.is_set() and not s.aborted:
                s.interrupted = True
        except asyncio.CancelledError:
            s.interrupted = True
            raise
        finally:
            for t in tasks + [stopper] + watch:
                t.cancel()
            await asyncio.gather(*tasks, stopper, *watch, return_exceptions=True)
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _attempt(self, job: Job, work: Work) -> "dict[str, Any] | Drop | BaseException":
        """Run one job with retries within its deadline; return its record, a Drop, or the exception that finally
        failed it (with ``attempts``: tries of the job, and ``requests``: requests they made, as far as known)."""
        tries = {"attempts": 0, "requests": 0}
        try:
            return await asyncio.wait_for(self._tries(job, work, tries), self.job_timeout_s)
        except asyncio.TimeoutError:
            exc = JobTimeout(f"no result within the job's deadline of {self.job_timeout_s:g} s "
                             f"({tries['attempts']} attempt(s)); it is tried again on the next run")
            exc.attempts, exc.requests = tries["attempts"], tries["requests"]  # type: ignore[attr-defined]
            return exc

    async def _tries(self, job: Job, work: Work, tries: dict[str, int]) -> "dict[str, Any] | Drop | BaseException":
        while True:
            tries["attempts"] += 1
            try:
                result = await work(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none kills the run
                tries["requests"] += int(getattr(exc, "requests", 1))
                if isinstance(exc, self.retry_on) and tries["attempts"] < self.max_attempts:
                    self.summary.retries += 1
                    delay = min(self.backoff_max_s, self.backoff_s * 2 ** (tries["attempts"] - 1))
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    continue
                exc.attempts, exc.requests = tries["attempts"], tries["requests"]  # type: ignore[attr-defined]
                return exc
            if not isinstance(result, (dict, Drop)):
                return TypeError(f"work returned {type(result).__name__}, expected a dict or Drop")
            return result

    def _failure_entry(self, job: Job, exc: BaseException) -> dict[str, Any]:
        before = self._failed_before.get(job.id, {})
        entry: dict[str, Any] = {
            "id": job.id, "reason": type(exc).__name__, "message": str(exc) or repr(exc),
            "attempts": int(before.get("attempts", 0)) + int(getattr(exc, "attempts", 1)),
            "requests": int(before.get("requests", 0)) + int(getattr(exc, "requests", 1)),
            "runs": int(before.get("runs", 0)) + 1,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if isinstance(exc, ReplyInvalid):
            entry["raw"] = exc.raw
        elif not isinstance(exc, self.retry_on) and type(exc).__module__ == "builtins":
            # a bug rather than a server problem: keep where it happened
            entry["where"] = traceback.format_exception(exc)[-2].strip()[:500] if exc.__traceback__ else ""
        return entry

    def _compact_failures(self) -> None:
        """One line per id still failing: earlier failures not retried (interrupted) plus this run's."""
        keep = {k: v for k, v in self._failed_before.items() if k not in self._succeeded}
        keep.update(self._failed_now)
        if keep or self.failures_path.exists():
            write_jsonl(self.failures_path, list(keep.values()))
        if self.dropped_path.exists() and self.dropped_path.stat().st_size == 0:
            self.dropped_path.unlink()
        if self.failures_path.exists() and self.failures_path.stat().st_size == 0:
            self.failures_path.unlink()


def run_jobs(jobs: Iterable[Job], work: Work, output: str | Path, **kwargs: Any) -> RunSummary:
    """Synchronous entry: ``asyncio.run`` a ``Runner`` (Ctrl-C/SIGTERM give an ``interrupted`` summary)."""
    runner = Runner(output, **kwargs)
    return asyncio.run(runner.run(jobs, work))
