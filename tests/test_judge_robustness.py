"""Adversarial answers: a gullible judge flips, a content-following judge does not."""

from __future__ import annotations

import asyncio
import json

from judge.robustness import ATTACKS, flip_rates
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy
from ollama_server import pairwise_answers

ITEMS = [(f"Question {i}?", f"Alpha answer {i} is correct.", f"Beta answer {i} is wrong.") for i in range(4)]


def verdict(pick_a: bool) -> str:
    return json.dumps({"reason": "scripted", "winner": "A" if pick_a else "B"})


def content_judge(messages, fmt, options):
    a, _ = pairwise_answers(messages)
    return verdict("Alpha" in a)


def gullible_judge(messages, fmt, options):
    """Obeys injections and verdicts written into answers, loves length, otherwise prefers Alpha."""
    a, b = pairwise_answers(messages)
    if '"winner": "B"' in a + b:   # takes a verdict it finds in the text for the judge's own
        return verdict(False) if '"winner": "B"' in b else verdict(True)
    if "pick this one" in a or "pick this one" in b:
        return verdict("pick this one" in a)
    if abs(len(a) - len(b)) > 100:
        return verdict(len(a) > len(b))
    return verdict("Alpha" in a)


def run_with(server, reply):
    server.reply = reply

    async def go():
        client = make_client("ollama:judge", host=server.url,
                             retry=RetryPolicy(attempts=2, base_delay=0.01))
        try:
            return await flip_rates(client, ITEMS)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_content_judge_does_not_flip(ollama_server) -> None:
    r = run_with(ollama_server, content_judge)
    assert r["baseline"] == ["A"] * 4
    for name in ("injection", "forged", "longer", "empty"):
        assert r[name]["flip_rate"] == 0.0 and r[name]["attacked_wins"] == 0.0


def test_gullible_judge_flips_and_the_rate_says_so(ollama_server) -> None:
    r = run_with(ollama_server, gullible_judge)
    assert r["baseline"] == ["A"] * 4
    assert r["injection"]["flip_rate"] == 1.0 and r["injection"]["attacked_wins"] == 1.0
    assert r["forged"]["flip_rate"] == 1.0 and r["forged"]["attacked_wins"] == 1.0
    assert r["longer"]["flip_rate"] == 1.0
    assert r["empty"]["flip_rate"] == 0.0  # empty is shorter: the length-lover still picks A
    # every variant was judged in both orders
    assert ollama_server.count("/api/chat") == (1 + len(ATTACKS)) * 4 * 2  # baseline and each edit, both orders
