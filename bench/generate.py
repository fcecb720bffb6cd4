"""How close ``prefloop generate`` gets to the server's capacity.

The Ollama-protocol test server (tests/ollama_server.py) runs in its own process with N parallel slots and a
fixed latency L per request, so it can serve at most N / L requests per second. The generator (rewrite strategy,
the real ``ollama`` client, the durable runner writing every pair) runs against it with its default concurrency
for a server with OLLAMA_NUM_PARALLEL=N (N plus a quarter), and we print achieved pairs/s ÷ N/L and the
client-side overhead per request:

    overhead = wall × N / requests − L      (time a slot sat idle or a request spent outside the server)

Target: ≥ 95 % of capacity at every N, overhead under 2 ms. Also printed, from the same run: a bare
``ollama.AsyncClient`` with N requests in flight (no runner, no records: what this machine allows), the
generator's own CPU per pair with an instant in-process model, and for contrast the seed notebook's way: one
request in flight at a time (a plain loop), which gets 1/N of capacity whatever the server can do.
The client and the server share this machine's CPUs: on a busy 2-core machine large N is CPU-bound (the client
spends ~1.5-2 ms of CPU per request in the ollama/httpx stack), so read the load average printed at the end.

Several hosts (``--hosts 2 3``): H servers of N slots each (``--slots``), the generator given all of them
(``hosts = ["URL=N", ...]``, its default concurrency the summed slots), against their summed capacity H·N/L, and
beside it one such server measured in the same run (the baseline); the speed-up is ideally H.

    .venv/bin/python bench/generate.py                 # N = 1, 4, 16, 64
    .venv/bin/python bench/generate.py --n 4 16 --seconds 3
    .venv/bin/python bench/generate.py --hosts 2 3 --slots 4
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_LATENCY = {1: 0.05, 4: 0.05, 16: 0.1, 64: 0.2}
EXTRA = int(os.environ.get("BENCH_EXTRA", "0"))  # in flight beyond the slots; 0 = the generator's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(slots: int, latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ollama_server.py"), "--port", str(port),
                             "--num-parallel", str(slots), "--latency", str(latency)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/api/version", timeout=0.5).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("test server did not start")


def write_prompts(path: Path, n: int) -> None:
    rows = [{"instruction": f"Task {i}: name a colour.", "input": "", "output": f"Colour number {i} is blue."}
            for i in range(n)]
    path.write_text(json.dumps(rows))


def run_generator(url: str, prompts: Path, out: Path, concurrency: int, slots: int | None = None,
                  hosts: list[str] | None = None) -> dict:
    """``concurrency`` 0 = the generator's own default for a server whose OLLAMA_NUM_PARALLEL is ``slots`` (or for
    ``hosts``, ``URL=SLOTS`` items: their summed slots)."""
    from generator.config import GenerateConfig
    from generator.run import generate

    os.environ["OLLAMA_HOST"] = url
    if slots:
        os.environ["OLLAMA_NUM_PARALLEL"] = str(slots)
    cfg = GenerateConfig(source=str(prompts), output=str(out), model="ollama:llama3.1:70b", strategy="rewrite",
                         concurrency=concurrency, quiet=True, max_attempts=1, hosts=hosts or [])
    cpu = time.process_time()  # the server runs in its own process: this is the client's CPU alone
    s = generate(cfg)
    cpu = time.process_time() - cpu
    done = s.written + sum(s.dropped.values())
    return {"written": done, "elapsed": s.run["elapsed_s"], "failed": s.failed, "cpu_ms": cpu * 1000 / max(1, done)}


def run_bare_client(url: str, n: int, requests: int) -> dict:
    """The same load through a bare ``ollama.AsyncClient`` (no runner, no records): what the machine allows."""
    import asyncio

    import ollama

    async def go() -> tuple[float, float]:
        client = ollama.AsyncClient(host=url)
        slots = asyncio.Semaphore(n)

        async def one(i: int) -> None:
            async with slots:
                async for _ in await client.chat(model="llama3.1:70b", stream=True,
                                                 messages=[{"role": "user", "content": f"Rewrite answer {i}."}]):
                    pass

        await one(-1)
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return time.perf_counter() - t0, time.process_time() - c0

    elapsed, cpu = asyncio.run(go())
    return {"written": requests, "elapsed": elapsed, "cpu_ms": cpu * 1000 / requests}


def bench(n: int, latency: float, seconds: float, tmp: Path, baseline_requests: int) -> dict:
    requests = max(n, int(round(seconds * n / latency)))
    proc, url = start_server(n, latency)
    try:
        prompts = tmp / f"prompts-{n}.json"
        write_prompts(prompts, requests)
        run_generator(url, prompts, tmp / f"warm-{n}.jsonl", min(n, 4))  # warm up imports and connections
        got = run_generator(url, prompts, tmp / f"out-{n}.jsonl", EXTRA and n + EXTRA, slots=n)
        bare = run_bare_client(url, n, requests)
        base_prompts = tmp / f"base-{n}.json"
        write_prompts(base_prompts, baseline_requests)
        base = run_generator(url, base_prompts, tmp / f"base-{n}.jsonl", 1)
    finally:
        proc.terminate()
        proc.wait()
    capacity = n / latency
    rate = got["written"] / got["elapsed"]
    base_rate = base["written"] / base["elapsed"]
    return {"n": n, "latency_ms": latency * 1000, "requests": got["written"], "failed": got["failed"],
            "capacity": capacity, "rate": rate, "ratio": rate / capacity,
            "overhead_ms": (got["elapsed"] * n / got["written"] - latency) * 1000, "cpu_ms": got["cpu_ms"],
            "bare_ratio": bare["written"] / bare["elapsed"] / capacity, "bare_cpu_ms": bare["cpu_ms"],
            "added_ms": (got["elapsed"] - bare["elapsed"]) * n / got["written"] * 1000,
            "baseline_rate": base_rate, "baseline_ratio": base_rate / capacity}


def bench_hosts(hosts: int, slots: int, latency: float, seconds: float, tmp: Path) -> dict:
    """``hosts`` servers of ``slots`` each, against their summed capacity, beside one such server (same run)."""
    requests = max(hosts * slots, int(round(seconds * hosts * slots / latency)))
    servers = [start_server(slots, latency) for _ in range(hosts)]
    try:
        prompts = tmp / f"hosts-{hosts}.json"
        write_prompts(prompts, requests)
        urls = [url for _, url in servers]
        run_generator(urls[0], prompts, tmp / f"hosts-warm-{hosts}.jsonl", min(slots, 4))
        one = run_generator(urls[0], prompts, tmp / f"hosts-one-{hosts}.jsonl", 0, hosts=[f"{urls[0]}={slots}"])
        many = run_generator(urls[0], prompts, tmp / f"hosts-many-{hosts}.jsonl", 0,
                             hosts=[f"{u}={slots}" for u in urls])
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()
    capacity = hosts * slots / latency
    rate, one_rate = many["written"] / many["elapsed"], one["written"] / one["elapsed"]
    return {"hosts": hosts, "slots": slots, "latency_ms": latency * 1000, "requests": many["written"],
            "failed": many["failed"], "capacity": capacity, "rate": rate, "ratio": rate / capacity,
            "one_rate": one_rate, "one_ratio": one_rate / (slots / latency), "speedup": rate / one_rate,
            "cpu_ms": many["cpu_ms"]}


class InstantModel:
    """A model that answers at once, in process: what is left is the generator's own cost per pair (runner,
    strategy, record building, the JSONL append and flush)."""

    def __init__(self, spec: str):
        from prefloop.llm.base import parse_spec

        self.spec = parse_spec(spec)

    async def preflight(self) -> None:
        pass

    async def chat(self, messages, *, schema=None, options=None):  # noqa: ANN001, ANN201 - the LLMClient shape
        from prefloop.llm.base import ChatReply

        return ChatReply(text="Here is the rewritten response:\n\n\"Kindly, " + messages[-1]["content"][-40:] + '"')

    async def aclose(self) -> None:
        pass


def generator_layer(tmp: Path, pairs: int = 4000, concurrency: int = 16) -> dict:
    from generator.config import GenerateConfig
    from generator.run import generate

    prompts = tmp / "layer.json"
    write_prompts(prompts, pairs)
    spec = "ollama:llama3.1:70b"
    cfg = GenerateConfig(source=str(prompts), output=str(tmp / "layer.jsonl"), model=spec, concurrency=concurrency,
                         quiet=True)
    cpu = time.process_time()
    s = generate(cfg, clients={spec: InstantModel(spec)})
    cpu = time.process_time() - cpu
    return {"pairs": s.written, "us_per_pair": s.run["elapsed_s"] / s.written * 1e6,
            "cpu_us_per_pair": cpu / s.written * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64], help="parallel slots to test")
    parser.add_argument("--latency", type=float, default=None, help="seconds per request (default per N)")
    parser.add_argument("--seconds", type=float, default=2.0, help="ideal run length per N")
    parser.add_argument("--baseline-requests", type=int, default=20)
    parser.add_argument("--hosts", type=int, nargs="+", default=None,
                        help="instead: generation over this many servers (each --slots slots), beside one server")
    parser.add_argument("--slots", type=int, default=4, help="with --hosts: slots per server")
    args = parser.parse_args()
    if args.hosts:
        latency = args.latency or 0.05
        with tempfile.TemporaryDirectory() as tmp:
            for h in args.hosts:
                r = bench_hosts(h, args.slots, latency, args.seconds, Path(tmp))
                print(f"{r['hosts']} hosts x {r['slots']} slots, L={r['latency_ms']:.0f}ms, {r['requests']} pairs: "
                      f"capacity {r['capacity']:5.0f}/s, generate {r['rate']:6.1f}/s = {r['ratio']:6.1%} "
                      f"(failed {r['failed']}, client CPU {r['cpu_ms']:.2f} ms/pair) | one host, same run: "
                      f"{r['one_rate']:6.1f}/s = {r['one_ratio']:6.1%} of its capacity | speed-up "
                      f"{r['speedup']:.2f}x (ideal {r['hosts']}x)", flush=True)
        print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (servers and client share them)")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        layer = generator_layer(Path(tmp))
        print(f"generator's own cost (instant in-process model, {layer['pairs']} pairs): "
              f"{layer['us_per_pair']:.0f} µs wall, {layer['cpu_us_per_pair']:.0f} µs CPU per pair", flush=True)
        for n in args.n:
            latency = args.latency or DEFAULT_LATENCY.get(n, 0.1)
            rows.append(bench(n, latency, args.seconds, Path(tmp), args.baseline_requests))
            r = rows[-1]
            print(f"N={r['n']:>3} L={r['latency_ms']:>3.0f}ms {r['requests']:>4} pairs: capacity {r['capacity']:5.0f}/s, "
                  f"generate {r['rate']:5.1f}/s = {r['ratio']:6.1%} (overhead {r['overhead_ms']:6.2f} ms/req, CPU "
                  f"{r['cpu_ms']:4.2f} ms/req) | bare ollama client {r['bare_ratio']:6.1%} (CPU {r['bare_cpu_ms']:4.2f}"
                  f" ms/req); generate adds {r['added_ms']:5.2f} ms/req | one in flight (seed notebook) "
                  f"{r['baseline_rate']:5.1f}/s = {r['baseline_ratio']:6.1%}", flush=True)
    if not rows:
        return
    worst = min(r["ratio"] for r in rows)
    print(f"worst ratio {worst:.1%} (target >= 95%); max overhead {max(r['overhead_ms'] for r in rows):.2f} ms "
          f"(target < 2 ms); client CPU per request {max(r['cpu_ms'] for r in rows):.2f} ms at most; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (server and client share them)")


if __name__ == "__main__":
    main()
