"""How much the Ollama-protocol test server and OllamaClient cost per request (so benchmarks built on them measure
the generator, not the harness).

1. Server alone: the server in its own process, latency 0, driven by raw httpx at concurrency C -> requests/s
   and the server's own CPU time per request (from /proc; the clean figure on a shared machine).
2. Capacity: server with N slots and fixed latency L (capacity N/L req/s), driven by OllamaClient at concurrency N
   -> achieved / capacity, and the client's overhead per request.

    .venv/bin/python bench/ollama_server.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(port: int, **settings: float) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "tests" / "ollama_server.py"), "--port", str(port)]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "serving on ..."
    return proc


async def raw_rate(url: str, n: int, concurrency: int, stream: bool) -> float:
    import httpx

    body = {"model": "llama3.1:70b", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, trust_env=False, timeout=30) as h:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                r = await h.post("/api/chat", json=body)
                r.raise_for_status()

        await one()
        t = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(n)])
        return n / (time.perf_counter() - t)


async def client_rate(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) for OllamaClient at ``concurrency`` requests in flight."""
    from prefloop.llm import make_client

    client = make_client("ollama:llama3.1:70b", host=url)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.chat([{"role": "user", "content": f"question {i}"}])

    await one(-1)
    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[one(i) for i in range(n)])
    rate = n / (time.perf_counter() - t)
    cpu_ms = (time.process_time() - cpu) / n * 1000
    await client.aclose()
    return rate, cpu_ms


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (ratios need a quiet machine)")
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    proc = spawn(port, num_parallel=64)
    try:
        url = f"http://127.0.0.1:{port}"
        for stream in (False, True):
            for conc in (1, 16):
                before = cpu_seconds(proc.pid)
                rate = asyncio.run(raw_rate(url, args.requests, conc, stream))
                server_ms = (cpu_seconds(proc.pid) - before) / (args.requests + 1) * 1000
                print(f"server alone, latency 0, stream={stream!s:5} concurrency {conc:2}: {rate:7.0f} req/s "
                      f"through a raw httpx client; server CPU {server_ms:.2f} ms/req "
                      f"(= {1000 / server_ms:,.0f} req/s on one core)")
        for conc in (1, 16, 64):
            rate, cpu_ms = asyncio.run(client_rate(url, args.requests, conc))
            print(f"OllamaClient (streaming), latency 0, concurrency {conc:2}: {rate:7.0f} req/s, "
                  f"client CPU {cpu_ms:.2f} ms/req")
    finally:
        proc.terminate()
        proc.wait()
    latency = 0.05
    for slots in (1, 4, 16):
        port = free_port()
        proc = spawn(port, num_parallel=slots, latency=latency)
        try:
            n = max(40, int(slots / latency * 2))  # ~2 s of work
            rate, _ = asyncio.run(client_rate(f"http://127.0.0.1:{port}", n, slots))
            capacity = slots / latency
            overhead_ms = (slots / rate - latency) * 1000
            print(f"N={slots:2} slots, latency {latency * 1000:.0f} ms: {rate:6.1f} req/s of capacity {capacity:5.0f} "
                  f"= {rate / capacity:6.1%}  (per-request overhead {overhead_ms:.2f} ms)")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
