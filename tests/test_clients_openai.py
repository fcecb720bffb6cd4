"""OpenAIClient against the test server's OpenAI-compatible /v1 endpoints: request shape, retries, schema
validation, preflight, and that the API key never leaks into reprs, errors, replies or logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from prefloop.llm import GenOptions, ReplyInvalid, ServerFatal, Transient, make_client
from prefloop.llm.openai_client import OpenAIClient
from prefloop.llm.retry import RetryPolicy

USER = [{"role": "user", "content": "Rate this answer."}]
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
          "required": ["score"]}
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
KEY = "sk-test-SECRET-0123456789"


def client_for(server, model="llama3.1:70b", **kwargs) -> OpenAIClient:
    kwargs.setdefault("retry", FAST)
    return make_client(f"openai:{model}@{server.url}/v1", **kwargs)


def run(client, coro_fn):
    async def go():
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_chat_request_shape_and_usage(ollama_server):
    c = client_for(ollama_server)
    reply = run(c, lambda c: c.chat(USER, options=GenOptions(max_tokens=50, seed=3, temperature=0.2)))
    body = ollama_server.bodies("/v1/chat/completions")[0]
    assert body["max_tokens"] == 50 and body["seed"] == 3 and body["temperature"] == 0.2
    assert body["messages"] == USER and "response_format" not in body
    assert reply.text and reply.completion_tokens == len(reply.text.split()) and reply.prompt_tokens > 0
    assert reply.model == "openai:llama3.1:70b"


def test_schema_uses_response_format_and_validates(ollama_server):
    reply = run(client_for(ollama_server), lambda c: c.chat(USER, schema=SCHEMA))
    body = ollama_server.bodies("/v1/chat/completions")[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert 0 <= reply.data["score"] <= 100


@pytest.mark.parametrize("fault,kwargs", [("status", {"status": 429}), ("status", {"status": 503}),
                                          ("status", {"status": 500}), ("drop", {}), ("hang", {"seconds": 5}),
                                          ("error_mid_stream", {})])
def test_transient_faults_are_retried(ollama_server, fault, kwargs):
    ollama_server.fail(fault, endpoint="/v1/chat/completions", times=2, **kwargs)
    c = client_for(ollama_server, timeout=0.2)
    reply = run(c, lambda c: c.chat(USER))
    assert [e.fault for e in ollama_server.requests("/v1/chat/completions")] == [fault, fault, None]
    assert reply.attempts == 3 and c.stats.retries == 2


def test_bounded_retries_and_no_retry_on_404(ollama_server):
    ollama_server.fail("status", endpoint="/v1/chat/completions", status=503, times=-1)
    with pytest.raises(Transient, match="after 4 attempts"):
        run(client_for(ollama_server), lambda c: c.chat(USER))
    assert ollama_server.count("/v1/chat/completions") == 4
    ollama_server.clear_faults()
    ollama_server.reset_log()
    with pytest.raises(ServerFatal, match="404.*not found"):
        run(client_for(ollama_server, model="missing:1b"), lambda c: c.chat(USER))
    assert ollama_server.count("/v1/chat/completions") == 1


def test_invalid_json_is_reply_invalid_with_the_raw_text(ollama_server):
    ollama_server.fail("schema_violation", endpoint="/v1/chat/completions", times=1)
    with pytest.raises(ReplyInvalid):
        run(client_for(ollama_server), lambda c: c.chat(USER, schema=SCHEMA, options=GenOptions(seed=4)))
    reply = run(client_for(ollama_server), lambda c: c.chat(USER, schema=SCHEMA, options=GenOptions(seed=4)))
    assert [b["seed"] for b in ollama_server.bodies("/v1/chat/completions")] == [4, 4] and "score" in reply.data
    ollama_server.reply = lambda messages, fmt, options: "I'd say about 80."
    with pytest.raises(ReplyInvalid) as err:
        run(client_for(ollama_server), lambda c: c.chat(USER, schema=SCHEMA))
    assert err.value.raw == "I'd say about 80." and ollama_server.count("/v1/chat/completions") == 3


def test_preflight(ollama_server):
    run(client_for(ollama_server), lambda c: c.preflight())
    with pytest.raises(ServerFatal, match="not served.*llama3.1:70b"):
        run(client_for(ollama_server, model="gpt-9"), lambda c: c.preflight())
    url = ollama_server.url
    ollama_server.stop()
    with pytest.raises(ServerFatal, match="cannot reach"):
        run(make_client(f"openai:x@{url}/v1", retry=FAST), lambda c: c.preflight())


def test_remote_server_without_key_fails_preflight(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    c = make_client("openai:gpt-4o-mini@https://api.example.invalid/v1", api_key_env="MY_KEY")
    with pytest.raises(ServerFatal, match="set the environment variable MY_KEY"):
        run(c, lambda c: c.preflight())


def test_api_key_is_sent_but_never_leaks(ollama_server, monkeypatch, caplog):
    ollama_server.api_key = KEY
    monkeypatch.setenv("JUDGE_KEY", KEY)
    c = client_for(ollama_server, api_key_env="JUDGE_KEY")
    ollama_server.fail("status", endpoint="/v1/chat/completions", status=503)  # a logged retry
    async def chat_and_reprs(c):
        reply = await c.chat(USER)
        return reply, repr(c), repr(c.http), repr(c.http.headers)

    with caplog.at_level(logging.DEBUG, logger="prefloop"):
        reply, *reprs = run(c, chat_and_reprs)
    assert ollama_server.requests("/v1/chat/completions")[-1].headers["authorization"] == f"Bearer {KEY}"
    assert all(KEY not in text for text in reprs) and KEY not in repr(reply)
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)
    # a wrong key: fatal, not retried, and the message names the variable, not the value
    monkeypatch.setenv("JUDGE_KEY", "sk-wrong-key-987")
    ollama_server.reset_log()
    with pytest.raises(ServerFatal) as err:
        run(client_for(ollama_server, api_key_env="JUDGE_KEY"), lambda c: c.chat(USER))
    assert "JUDGE_KEY" in str(err.value) and "sk-wrong" not in str(err.value)
    assert ollama_server.count("/v1/chat/completions") == 1


def test_retry_after_header_is_honoured():
    from prefloop.llm.openai_client import retry_after_seconds

    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
