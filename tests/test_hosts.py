"""One model on several Ollama servers: requests spread by slots with no host above its own, a failing host's work
rerouted to the others, one build of the model on every host, and generation's kill -9 guarantee unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import pytest

from generator.config import GenerateConfig
from generator.run import pair_id
from ollama_server import OllamaServer
from prefloop.llm import ServerFatal, make_client, parse_spec
from prefloop.llm.base import spec_identity
from prefloop.llm.hosts import Host, parse_hosts
from prefloop.llm.retry import RetryPolicy
from prefloop.sources import load_prompts
from test_generator_kill import kill_repeatedly, start, write_prompts

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def servers():
    """Three test servers with room for more than any client here sends (the client's slots are what is tested)."""
    started = [OllamaServer(num_parallel=16, latency=0.03).start() for _ in range(3)]
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def hosts_spec(servers, slots) -> str:
    return ",".join(f"{s.url}={n}" for s, n in zip(servers, slots))


def ask(client, n: int) -> list:
    async def go():
        try:
            return await asyncio.gather(*[client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(n)])
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_a_model_setting_names_several_hosts_and_the_same_model():
    spec = parse_spec("ollama:llama3.1:70b@http://a:11434=4,http://b:11434")
    assert spec.model == "llama3.1:70b" and parse_hosts(spec.base_url) == [Host("http://a:11434", 4),
                                                                        Host("http://b:11434")]
    assert spec_identity("ollama:llama3.1:70b@http://a:11434,http://b:11434") == "ollama:llama3.1:70b"
    assert spec_identity("openai:m@http://x/v1") == "openai:m@http://x/v1"  # another server may be another model
    one = GenerateConfig(model="ollama:writer")
    several = GenerateConfig(model="ollama:writer@http://a:1,http://b:2", hosts=["http://c:3=2"])
    assert one.identity() == several.identity()  # adding hosts changes no pair id: a run resumes across it
    for bad in ("http://a:1=0", "http://a:1,http://a:1", "http://a:1=x"):
        with pytest.raises(ValueError):
            parse_hosts(bad)


def test_the_default_concurrency_is_the_sum_of_the_slots(monkeypatch):
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    assert GenerateConfig(model="ollama:m", hosts=["http://a:1=4", "http://b:1=2"]).resolved_concurrency() == 6
    assert GenerateConfig(model="ollama:m@http://a:1,http://b:1=3").resolved_concurrency() == 4 + 3
    assert GenerateConfig(model="ollama:m").resolved_concurrency() == 4                 # one host, as before
    assert GenerateConfig(model="ollama:m", hosts=["http://a:1=2"], concurrency=9).resolved_concurrency() == 9


def test_requests_spread_by_slots_and_no_host_runs_more_than_its_own(servers):
    slots = (1, 2, 3)
    client = make_client(f"ollama:llama3.1:70b@{hosts_spec(servers, slots)}", retry=FAST)
    assert client.capacity == sum(slots)
    n = 60
    replies = ask(client, n)
    assert len(replies) == n and all(r.text for r in replies)
    counts = [s.count("/api/chat") for s in servers]
    assert sum(counts) == n
    assert [s.peak_running for s in servers] == list(slots)  # every slot used, none exceeded
    for count, k in zip(counts, slots):  # a busy slot serves at the same pace everywhere: shares follow slots
        assert abs(count - n * k / sum(slots)) <= 0.15 * n, counts


@pytest.mark.parametrize("fault,kwargs", [("status", {"status": 503}), ("status", {"status": 500}),
                                          ("drop", {}), ("hang", {"seconds": 5})])
def test_a_failing_host_cools_down_and_its_work_goes_to_the_others(servers, fault, kwargs):
    bad, good = servers[0], servers[1]
    bad.fail(fault, times=-1, **kwargs)
    client = make_client(f"ollama:llama3.1:70b@{hosts_spec([bad, good], (2, 2))}", retry=FAST, timeout=0.3)
    replies = ask(client, 12)
    assert len(replies) == 12 and all(r.text for r in replies)
    assert good.count("/api/chat") == 12              # every answer came from the healthy host
    assert bad.count("/api/chat") <= 4                 # a cooled host is not asked again for a while
    assert client.stats.retries == bad.count("/api/chat")


def test_a_host_that_recovers_takes_work_again(servers):
    a, b = servers[0], servers[1]
    a.fail("status", status=503, times=1)
    client = make_client(f"ollama:llama3.1:70b@{hosts_spec([a, b], (1, 1))}", retry=FAST)
    client.router.cooldown_s = 0.05

    async def go():
        await client.chat([{"role": "user", "content": "first"}])   # a fails once, b answers
        await asyncio.sleep(0.1)                                     # a's cool-down ends
        await asyncio.gather(*[client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(6)])
        await client.aclose()

    asyncio.run(go())
    assert [e.status for e in a.requests("/api/chat")][0] == 503
    assert a.requests("/api/chat")[-1].status == 200


def test_preflight_refuses_a_mix_of_builds_and_names_a_host_that_is_down(servers):
    a, b = servers[0], servers[1]
    a.add_model("mixed", quantization="Q4_K_M")
    b.add_model("mixed", quantization="Q8_0")
    client = make_client(f"ollama:mixed@{a.url},{b.url}", retry=FAST)
    with pytest.raises(ServerFatal, match="different builds of ollama:mixed"):
        asyncio.run(client.preflight())
    b.add_model("mixed", quantization="Q4_K_M")
    asyncio.run(client.preflight())
    assert client.digests[a.url] == client.digests[b.url]
    down = b.url
    b.stop()
    with pytest.raises(ServerFatal, match=f"cannot reach Ollama at {down}"):
        asyncio.run(make_client(f"ollama:mixed@{a.url},{down}", retry=FAST).preflight())


def test_generation_over_three_hosts_survives_kill_9_and_rerun(servers, tmp_path: Path) -> None:
    """The overnight guarantee with the work spread over three servers: nothing lost or written twice."""
    slots = (1, 2, 1)
    src, out = tmp_path / "prompts.json", tmp_path / "pairs.jsonl"
    write_prompts(src)
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_NUM_PARALLEL"}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), OLLAMA_HOST="http://127.0.0.1:9")  # unused
    args = [str(src), "-o", str(out), "--model", "ollama:llama3.1:70b", "--hosts", hosts_spec(servers, slots),
            "--quiet"]
    kills, _ = kill_repeatedly(args, env, out, random.Random(3), rounds=3, max_wait=0.2)
    assert kills >= 2
    proc = start(args, env)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output.decode()[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    prompts, _ = load_prompts(src)
    cfg = GenerateConfig(source=str(src), output=str(out), model="ollama:llama3.1:70b")
    assert sorted(r["id"] for r in rows) == sorted(pair_id(p, cfg) for p in prompts)  # all, once each
    assert all(s.count("/api/chat") > 0 for s in servers)
    assert all(s.peak_running <= k for s, k in zip(servers, slots))
    answered = sum(s.count("/api/chat") for s in servers)
    assert answered <= len(prompts) + kills * sum(slots)  # nothing redone beyond the work in flight at each kill
