"""OllamaClient against the Ollama-protocol test server, through the real ``ollama`` client: every fault class,
retry counts read from the server's request log, preflight messages, and what is sent on the wire."""

from __future__ import annotations

import asyncio
import logging

import pytest

from prefloop.llm import GenOptions, ReplyInvalid, ServerFatal, Transient, make_client
from prefloop.llm.ollama_client import OllamaClient, parse_version
from prefloop.llm.retry import RetryPolicy

USER = [{"role": "user", "content": "Rewrite this politely: give me the salt."}]
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100},
                                           "reason": {"type": "string"}}, "required": ["score", "reason"]}
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def client_for(server, model="llama3.1:70b", **kwargs) -> OllamaClient:
    kwargs.setdefault("retry", FAST)
    return make_client(f"ollama:{model}", host=server.url, **kwargs)


def chat(client, messages=USER, **kwargs):
    async def go():
        try:
            return await client.chat(messages, **kwargs)
        finally:
            await client.aclose()
    return asyncio.run(go())


def preflight(client):
    async def go():
        try:
            await client.preflight()
        finally:
            await client.aclose()
    asyncio.run(go())


def test_plain_chat_sends_num_ctx_keep_alive_and_counts_usage(ollama_server):
    c = client_for(ollama_server, keep_alive="2h")
    reply = chat(c, options=GenOptions(num_ctx=8192, max_tokens=64, seed=5, temperature=0.7))
    body = ollama_server.bodies("/api/chat")[0]
    assert body["options"]["num_ctx"] == 8192 and body["options"]["num_predict"] == 64
    assert body["options"]["seed"] == 5 and body["options"]["temperature"] == 0.7
    assert body["keep_alive"] == "2h" and body["stream"] is True
    assert reply.text == ollama_server.reply(USER, "", body["options"])
    assert reply.completion_tokens == len(reply.text.split()) and reply.prompt_tokens > 0
    assert reply.attempts == 1 and c.stats.requests == 1


def test_host_from_environment(ollama_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    c = make_client("llama3.1:70b", retry=FAST)
    assert c.url == ollama_server.url
    assert chat(c).text
    assert ollama_server.count("/api/chat") == 1


def test_schema_reply_is_parsed_and_validated(ollama_server):
    reply = chat(client_for(ollama_server), schema=SCHEMA)
    assert ollama_server.bodies("/api/chat")[0]["format"] == SCHEMA
    assert 0 <= reply.data["score"] <= 100 and isinstance(reply.data["reason"], str)


@pytest.mark.parametrize("fault,kwargs", [
    ("status", {"status": 503}), ("status", {"status": 500}), ("status", {"status": 429}),
    ("status", {"status": 502}), ("error_mid_stream", {"after_chunks": 2}), ("drop", {}),
    ("garbage_line", {"after_chunks": 1}), ("hang", {"seconds": 5}), ("latency", {"seconds": 3}),
])
def test_transient_faults_are_retried(ollama_server, fault, kwargs):
    ollama_server.fail(fault, times=2, **kwargs)
    # 1 s: well under the hang (5 s), and long enough that a loaded 2-core machine does not time out a request
    # before it reaches the server (at 0.2 s one did: 4 attempts for 3 requests)
    c = client_for(ollama_server, timeout=1.0)
    reply = chat(c)
    log = ollama_server.requests("/api/chat")
    assert [e.fault for e in log] == [fault, fault, None]
    assert reply.attempts == 3 and c.stats.retries == 2 and reply.text


def test_retries_are_bounded(ollama_server):
    ollama_server.fail("status", status=503, times=-1)
    c = client_for(ollama_server)
    with pytest.raises(Transient, match="after 4 attempts.*503.*server busy"):
        chat(c)
    assert ollama_server.count("/api/chat") == FAST.attempts


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_not_retried(ollama_server, status):
    ollama_server.fail("status", status=status, times=-1, message="model 'x' not found" if status == 404 else "")
    with pytest.raises(ServerFatal, match=str(status) if status == 400 else "ollama pull llama3.1:70b"):
        chat(client_for(ollama_server))
    assert ollama_server.count("/api/chat") == 1


def test_missing_model_mid_run_is_fatal_with_pull_hint(ollama_server):
    ollama_server.fail("missing_model")
    with pytest.raises(ServerFatal, match="not found, try pulling it first.*Run: ollama pull llama3.1:70b"):
        chat(client_for(ollama_server))
    assert ollama_server.count("/api/chat") == 1


@pytest.mark.parametrize("fault", ["malformed_json", "schema_violation"])
def test_invalid_json_is_handed_back_once_with_the_raw_text(ollama_server, fault):
    """The client does not re-ask: the caller that parses replies owns that (judge.core)."""
    ollama_server.fail(fault, times=1)
    c = client_for(ollama_server)
    with pytest.raises(ReplyInvalid) as err:
        chat(c, schema=SCHEMA, options=GenOptions(seed=10))
    assert err.value.raw and ollama_server.count("/api/chat") == 1 and c.stats.invalid_replies == 1
    assert chat(c, schema=SCHEMA, options=GenOptions(seed=10)).data["score"] >= 0  # the fault is spent


def test_invalid_json_gives_up_with_the_raw_text(ollama_server):
    ollama_server.reply = lambda messages, fmt, options: "Sure! Here is my score: eighty."
    with pytest.raises(ReplyInvalid) as err:
        chat(client_for(ollama_server), schema=SCHEMA)
    assert err.value.raw == "Sure! Here is my score: eighty." and ollama_server.count("/api/chat") == 1


def test_truncated_json_says_it_hit_max_tokens(ollama_server):
    with pytest.raises(ReplyInvalid, match="max_tokens"):
        chat(client_for(ollama_server), schema=SCHEMA, options=GenOptions(max_tokens=2))


def test_non_streaming_mode(ollama_server):
    ollama_server.fail("error_mid_stream")  # without streaming the server answers 500 instead
    reply = chat(client_for(ollama_server, stream=False))
    assert [b["stream"] for b in ollama_server.bodies("/api/chat")] == [False, False] and reply.attempts == 2


def test_preflight_ok(ollama_server):
    preflight(client_for(ollama_server, model="LLAMA3.1:70B"))
    preflight(client_for(ollama_server, model="judge"))  # :latest implied


def test_preflight_missing_model_names_pull(ollama_server):
    with pytest.raises(ServerFatal, match="Run: ollama pull qwen2.5:72b"):
        preflight(client_for(ollama_server, model="qwen2.5:72b"))


def test_preflight_old_version(ollama_server):
    ollama_server.version = "0.4.7"
    with pytest.raises(ServerFatal, match="0.4.7.*>= 0.5.0"):
        preflight(client_for(ollama_server))


def test_preflight_unreachable(ollama_server):
    url = ollama_server.url
    ollama_server.stop()
    c = make_client("ollama:llama3.1:70b", host=url)
    with pytest.raises(ServerFatal, match="cannot reach Ollama.*ollama serve"):
        preflight(c)


def test_preflight_retries_a_transient_503(ollama_server):
    ollama_server.fail("status", endpoint="/api/version", status=503)
    preflight(client_for(ollama_server))
    assert ollama_server.count("/api/version") == 2


def test_long_prompt_warns_once(ollama_server, caplog):
    long = [{"role": "user", "content": "word " * 5000}]
    c = client_for(ollama_server)

    async def go():
        await c.chat(long, options=GenOptions(num_ctx=2048))
        await c.chat(long, options=GenOptions(num_ctx=2048))
        await c.aclose()

    with caplog.at_level(logging.WARNING, logger="prefloop.llm"):
        asyncio.run(go())
    assert len([r for r in caplog.records if "num_ctx" in r.message]) == 1


def test_concurrent_requests_use_all_slots(ollama_server):
    ollama_server.latency = 0.1
    c = client_for(ollama_server)

    async def go():
        replies = await asyncio.gather(*[c.chat([{"role": "user", "content": f"q{i}"}]) for i in range(8)])
        await c.aclose()
        return replies

    replies = asyncio.run(go())
    assert len({r.text for r in replies}) == 8 and ollama_server.peak_running == ollama_server.num_parallel


def test_parse_version():
    assert parse_version("0.12.11") == (0, 12, 11) and parse_version("0.5.0-rc1") == (0, 5, 0)
    assert parse_version("v0.4") == (0, 4, 0) and parse_version("dev") is None


def test_server_restart_mid_run_is_survived(ollama_server):
    """Ollama restarted (crash, upgrade) while a request is being retried: connection refused, then success."""
    import threading
    import time

    port = ollama_server.port
    ollama_server.stop()
    c = client_for(ollama_server, retry=RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.2))
    restart = threading.Timer(0.3, ollama_server.start)
    t = time.perf_counter()
    restart.start()
    reply = chat(c)
    restart.join()
    assert ollama_server.port == port and reply.attempts > 1 and time.perf_counter() - t >= 0.3
    assert ollama_server.count("/api/chat") == 1  # the refused attempts never reached it


def test_timeout_is_always_explicit(ollama_server):
    c = client_for(ollama_server)
    timeout = c.client._client.timeout
    assert timeout.read == 300.0 and timeout.connect == 10.0
    assert c.client._client.trust_env is False  # loopback: no proxy from the environment


def test_real_queue_full_503s_are_retried_to_success():
    """More requests than slots + queue: the server answers `server busy` 503s; backoff gets every one through."""
    from ollama_server import BUSY_MESSAGE, OllamaServer

    with OllamaServer(num_parallel=1, max_queue=1, latency=0.05) as server:
        c = make_client("ollama:llama3.1:70b", host=server.url,
                        retry=RetryPolicy(attempts=10, base_delay=0.05, max_delay=0.3))

        async def go():
            replies = await asyncio.gather(*[c.chat([{"role": "user", "content": f"q{i}"}]) for i in range(5)])
            await c.aclose()
            return replies

        replies = asyncio.run(go())
    statuses = [e.status for e in server.requests("/api/chat")]
    assert len(replies) == 5 and statuses.count(200) == 5 and statuses.count(503) >= 1
    assert c.stats.retries == statuses.count(503) and BUSY_MESSAGE in c.stats.last_error


def test_unload_on_close(ollama_server):
    async def go():
        c = client_for(ollama_server, unload_on_close=True)
        await c.chat(USER)
        loaded = [m.model for m in (await c.client.ps()).models]
        await c.aclose()
        probe = client_for(ollama_server)
        after = [m.model for m in (await probe.client.ps()).models]
        await probe.aclose()
        return loaded, after

    loaded, after = asyncio.run(go())
    assert loaded == ["llama3.1:70b"] and after == []
    last = ollama_server.bodies("/api/chat")[-1]
    assert last["messages"] == [] and last["keep_alive"] == 0


def test_connections_are_reused_and_survive_a_new_event_loop(ollama_server):
    c = client_for(ollama_server)

    async def burst():
        await asyncio.gather(*[c.chat([{"role": "user", "content": f"q{i}"}]) for i in range(6)])
        for i in range(4):
            await c.chat(USER)
        return len(c.pool)

    assert asyncio.run(burst()) == 6  # one connection per request in flight, then reused
    assert asyncio.run(c.chat(USER)).text  # a second asyncio.run: fresh connections, not "Event loop is closed"
    asyncio.run(c.aclose())
