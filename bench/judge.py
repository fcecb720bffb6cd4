"""Judge throughput against the Ollama-protocol test server: how close to the server's capacity, and what the cache
saves on a rerun.

The server holds every generation for a fixed ``latency`` inside one of ``slots`` parallel slots, so its capacity
is exactly ``slots / latency`` calls per second. We judge ``pairs`` answer pairs (two calls each, both orders)
through the same path ``prefloop judge`` uses (durable runner + ``judge_pair`` + sqlite cache + the real ollama
client), and, as a baseline in the same run, fire the same number of bare ``client.chat`` calls with ``slots`` in
flight. Then the judging is run again on the same cache: the target is zero server calls.

    python bench/judge.py [--slots 4] [--latency 0.5] [--pairs 60]

Then the same pairs once more, fresh cache, with the judge's verdict log-odds read from its token log-probabilities
(``judge.logprob.ServedLogprobJudge``, what ``ollama:`` judges do by default): judgments/s with log-probs against
without, back to back on the same server, and the server calls of each (target: the same, two per pair: the
log-odds come with the verdict, no extra request).

Targets: judged calls/s >= 95 % of capacity; rerun = 0 server calls; log-prob calls = plain calls, every verdict
with log-odds. The bare client is printed beside it
because the client + test-server HTTP stack costs ~15 ms a call on a busy 2-core machine: at 100 ms latency that
caps anyone at ~85 % of capacity, at 500 ms (a fast real judge) it is ~4 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from judge.cache import JudgeCache  # noqa: E402
from judge.logprob import ServedLogprobJudge  # noqa: E402
from judge.pairwise import judge_pair  # noqa: E402
from ollama_server import OllamaServer, pairwise_answers  # noqa: E402
from prefloop.llm import make_client  # noqa: E402
from prefloop.runner import Job, Runner  # noqa: E402


def verdict(messages, fmt, options) -> str:
    a, _ = pairwise_answers(messages)
    return json.dumps({"reason": "bench", "winner": "A" if "policy" in a else "B"})


def alternatives(messages, fmt, options, before, token) -> dict[str, float]:
    """The next-token distribution when log-probs are asked: the verdict token spread over A, B and tie."""
    if before.endswith('"winner": "'):
        a, _ = pairwise_answers(messages)
        return {"A": -0.2, "B": -1.8, "tie": -4.0} if "policy" in a else {"B": -0.2, "A": -1.8, "tie": -4.0}
    return {token: -0.01}


async def judge_run(url: str, pairs: int, slots: int, out: Path, cache_path: Path,
                    logodds: bool = False) -> tuple[float, object]:
    client = make_client("ollama:judge", host=url, slots=slots)  # the client keeps the server's slots full
    if logodds:
        client = ServedLogprobJudge(client)
    jobs = [Job(id=f"p{i}", data=i) for i in range(pairs)]

    async def work(job: Job) -> dict:
        v = await judge_pair(client, f"Question {job.data}?", f"policy answer {job.data}",
                             f"reference answer {job.data}", cache=cache)
        return {"winner": v.winner, "calls": v.calls}

    with JudgeCache(cache_path) as cache:
        t0 = time.perf_counter()
        summary = await Runner(out, concurrency=slots, progress=False).run(jobs, work)
        elapsed = time.perf_counter() - t0
    await client.aclose()
    if logodds:
        summary.with_logodds = client.with_logodds  # type: ignore[attr-defined]
    return elapsed, summary


async def baseline_run(url: str, calls: int, slots: int) -> float:
    """Bare client calls, ``slots`` in flight: what the client and server alone reach."""
    client = make_client("ollama:judge", host=url)
    gate = asyncio.Semaphore(slots)

    async def one(i: int) -> None:
        async with gate:
            await client.chat([{"role": "user", "content": f"[The Start of Assistant A's Answer]\npolicy {i}\n"
                                                          "[The End"}], schema=None)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    await client.aclose()
    return elapsed


def serve(slots: int, latency: float) -> int:
    """Child process: run the test server, print its URL, answer 'count'/'reset' on stdin until 'quit'.

    The server lives in its own process, like a real Ollama: in the benchmark's process its threads would compete
    with the client for the GIL and the measurement would be of Python thread scheduling, not of our code.
    """
    server = OllamaServer(num_parallel=slots, latency=latency, reply=verdict).start()
    server.alternatives = alternatives
    print(server.url, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "count":
            print(server.count("/api/chat"), flush=True)
        elif cmd == "reset":
            server.reset_log()
            print("ok", flush=True)
        elif cmd == "quit":
            break
    server.stop()
    return 0


class ServerProcess:
    def __init__(self, slots: int, latency: float):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "--slots", str(slots), "--latency",
                                      str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def count(self) -> int:
        return int(self.ask("count"))

    def stop(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.slots, args.latency)

    capacity = args.slots / args.latency
    calls = 2 * args.pairs
    server = ServerProcess(args.slots, args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            base_s = asyncio.run(baseline_run(server.url, calls, args.slots))
            server.ask("reset")
            judge_s, summary = asyncio.run(judge_run(server.url, args.pairs, args.slots, tmp_path / "j.jsonl",
                                                     tmp_path / "cache.sqlite"))
            first_calls = server.count()
            # rerun with the judgments file gone: only the cache can save the calls
            (tmp_path / "j.jsonl").unlink()
            server.ask("reset")
            rerun_s, _ = asyncio.run(judge_run(server.url, args.pairs, args.slots, tmp_path / "j.jsonl",
                                               tmp_path / "cache.sqlite"))
            rerun_calls = server.count()
            # back to back on fresh caches: without log-probs, then with them
            runs = {}
            for logodds in (False, True):
                server.ask("reset")
                name = "logodds" if logodds else "plain"
                runs[name] = asyncio.run(judge_run(server.url, args.pairs, args.slots, tmp_path / f"{name}.jsonl",
                                                   tmp_path / f"{name}.sqlite", logodds=logodds)) + (server.count(),)
    finally:
        server.stop()

    judge_rate = first_calls / judge_s
    base_rate = calls / base_s
    print(f"test server (own process): {args.slots} slots x {args.latency * 1000:.0f} ms fixed latency -> capacity "
          f"{capacity:.1f} calls/s")
    print(f"baseline (bare ollama client, {args.slots} in flight): {calls} calls in {base_s:.2f}s = "
          f"{base_rate:.1f} calls/s = {base_rate / capacity:.1%} of capacity")
    print(f"judge (runner + judge_pair + cache): {args.pairs} pairs, {first_calls} calls in {judge_s:.2f}s = "
          f"{judge_rate:.1f} calls/s, {args.pairs / judge_s:.1f} pairs/s = {judge_rate / capacity:.1%} of capacity "
          f"(target >= 95%), {judge_rate / base_rate:.1%} of the bare client; written {summary.written}")
    print(f"rerun on the same cache: {rerun_calls} server calls (target 0) in {rerun_s:.3f}s "
          f"({args.pairs / max(rerun_s, 1e-9):.0f} pairs/s)")
    (plain_s, _, plain_calls), (lp_s, lp_summary, lp_calls) = runs["plain"], runs["logodds"]
    with_lp = getattr(lp_summary, "with_logodds", 0)
    print(f"without log-probs: {args.pairs / plain_s:.1f} judgments/s ({plain_calls} server calls); with log-probs "
          f"(top_logprobs, log-odds read at the verdict token): {args.pairs / lp_s:.1f} judgments/s "
          f"({lp_calls} server calls, target {plain_calls}; {with_lp} of {lp_calls} verdicts with log-odds) = "
          f"{plain_s / lp_s:.1%} of the plain rate")
    ok = judge_rate / capacity >= 0.95 and rerun_calls == 0 and lp_calls == plain_calls and with_lp == lp_calls
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
