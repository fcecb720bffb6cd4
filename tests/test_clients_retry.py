"""The shared retry helper and JSON-schema subset: delays, budgets, and what counts as valid."""

from __future__ import annotations

import asyncio
import random

import pytest

from prefloop.llm import ServerFatal, Transient
from prefloop.llm.retry import ClientStats, RetryPolicy, with_retries
from prefloop.llm.schema import SchemaError, extract_json, parse_reply, validate


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.5)
    rng = random.Random(0)
    delays = [[policy.delay(n, rng) for n in range(1, 7)] for _ in range(50)]
    for n, column in enumerate(zip(*delays), start=1):
        ceiling = min(8.0, 2 ** (n - 1))
        assert all(ceiling / 2 <= d <= ceiling for d in column)
        assert len(set(column)) > 1  # jittered: retries of many requests do not line up


def test_with_retries_counts_and_stops_on_fatal():
    calls = []
    stats = ClientStats()

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Transient("busy")
        return "ok"

    result, attempts = asyncio.run(with_retries(flaky, RetryPolicy(attempts=5, base_delay=0.001), stats=stats))
    assert (result, attempts, stats.retries) == ("ok", 3, 2)

    async def fatal():
        calls.append(1)
        raise ServerFatal("bad request")

    calls.clear()
    with pytest.raises(ServerFatal):
        asyncio.run(with_retries(fatal, RetryPolicy(attempts=5, base_delay=0.001)))
    assert len(calls) == 1


def test_retry_after_overrides_backoff():
    async def limited():
        err = Transient("429")
        err.retry_after = 0.0
        raise err

    loop_time = []

    async def go():
        start = asyncio.get_running_loop().time()
        with pytest.raises(Transient, match="after 3 attempts"):
            await with_retries(limited, RetryPolicy(attempts=3, base_delay=5.0))
        loop_time.append(asyncio.get_running_loop().time() - start)

    asyncio.run(go())
    assert loop_time[0] < 1.0  # the 5 s backoff was replaced by Retry-After: 0


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["verdict", "score"],
          "properties": {"verdict": {"enum": ["A", "B", "tie"]}, "score": {"type": "integer", "minimum": 0,
                                                                         "maximum": 10},
                         "notes": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}}


@pytest.mark.parametrize("value,ok", [
    ({"verdict": "A", "score": 3}, True),
    ({"verdict": "A", "score": 3, "notes": ["x"]}, True),
    ({"verdict": "C", "score": 3}, False),
    ({"verdict": "A", "score": 11}, False),
    ({"verdict": "A", "score": 3.5}, False),
    ({"verdict": "A", "score": True}, False),
    ({"verdict": "A"}, False),
    ({"verdict": "A", "score": 1, "extra": 1}, False),
    ({"verdict": "A", "score": 1, "notes": ["a", "b", "c"]}, False),
    ({"verdict": "A", "score": 1, "notes": [1]}, False),
    (["A", 3], False),
])
def test_validate_subset(value, ok):
    assert (validate(value, SCHEMA) == []) is ok


def test_extract_json_from_chatty_replies():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! Here it is: {"a": {"b": [1, 2]}} Hope this helps {"c": 2}') == {"a": {"b": [1, 2]}}
    with pytest.raises(SchemaError):
        extract_json("no json at all")
    with pytest.raises(SchemaError, match="missing required 'score'"):
        parse_reply('{"verdict": "A"}', SCHEMA)


def test_template_shows_shape_without_suggesting_values():
    from prefloop.llm.schema import template

    assert template(SCHEMA) == ('{"verdict": <"A" or "B" or "tie">, "score": <integer from 0 to 10>, '
                                '"notes": [<string>, ...]}')
