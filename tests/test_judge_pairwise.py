"""Pairwise and score judging against the Ollama-protocol test server, through the real ollama client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from judge.cache import JudgeCache
from judge.pairwise import judge_pair, normalize_winner, parse_verdict
from judge.prompts import TemplateError, load_template
from judge.scoring import score_answer
from prefloop.llm import make_client
from prefloop.llm.base import Transient
from prefloop.llm.retry import RetryPolicy
from ollama_server import judged_blocks, pairwise_answers, scored_answer

ALPHA = "Alpha answer: Paris is the capital of France."
BETA = "Beta answer: it is Lyon, probably."


def client_for(server, **kw):
    """The real Ollama client, pointed at the test server, with quick retries and no JSON re-asks of its own
    (the judge's own bounded retries are what these tests count)."""
    kw.setdefault("retry", RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02))
    return make_client("ollama:judge", host=server.url, **kw)


def prefers(word: str):
    """A consistent judge: picks whichever position holds the answer containing ``word``."""
    def reply(messages, fmt, options):
        a, _ = pairwise_answers(messages)
        return json.dumps({"reason": f"the {word} one is right", "winner": "A" if word in a else "B"})
    return reply


def run(coro):
    return asyncio.run(coro)


async def judged(server, *args, **kwargs):
    client = client_for(server)
    try:
        return await judge_pair(client, *args, **kwargs)
    finally:
        await client.aclose()


def test_consistent_judge_both_orders(ollama_server) -> None:
    ollama_server.reply = prefers("Alpha")
    v = run(judged(ollama_server, "What is the capital of France?", ALPHA, BETA))
    assert v.winner == "A" and v.consistent is True
    assert [g.first for g in v.games] == ["A", "B"]
    assert [g.shown for g in v.games] == ["A", "B"]     # alpha was in position A, then in position B
    assert ollama_server.count("/api/chat") == 2
    firsts = [pairwise_answers(b["messages"])[0] for b in ollama_server.bodies("/api/chat")]
    assert sorted(firsts) == sorted([ALPHA, BETA])       # each answer was shown first once
    # the judge was asked for JSON under the verdict schema
    assert all(b["format"]["properties"]["winner"]["enum"] == ["A", "B", "tie"]
               for b in ollama_server.bodies("/api/chat"))

    ollama_server.reply = prefers("Beta")
    v = run(judged(ollama_server, "What is the capital of France?", ALPHA, BETA))
    assert v.winner == "B" and v.consistent is True


def test_position_biased_judge_gives_inconsistent_tie(ollama_server) -> None:
    ollama_server.reply = lambda m, f, o: json.dumps({"reason": "first is better", "winner": "A"})
    v = run(judged(ollama_server, "Q?", ALPHA, BETA))
    assert v.winner == "tie" and v.consistent is False
    assert {g.pick for g in v.games} == {"A", "B"}


def test_reference_answer_reaches_the_judge_only_when_given(ollama_server) -> None:
    ollama_server.reply = prefers("Alpha")
    run(judged(ollama_server, "Q?", ALPHA, BETA, known_good="Paris."))
    run(judged(ollama_server, "Q2?", ALPHA, BETA))
    users = [next(m["content"] for m in b["messages"] if m["role"] == "user") for b in ollama_server.bodies("/api/chat")]
    assert sum(judged_blocks([{"role": "user", "content": u}]).get("Reference Answer") == "Paris." for u in users) == 2
    assert sum("Reference Answer" in u for u in users) == 2


def test_cache_makes_a_rerun_free_and_keys_on_template(ollama_server, tmp_path: Path) -> None:
    ollama_server.reply = prefers("Alpha")
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        first = run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache))
    calls = ollama_server.count("/api/chat")
    assert calls == 2
    with JudgeCache(tmp_path / "c.sqlite") as cache:  # a new process would open the file like this
        again = run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache))
        assert ollama_server.count("/api/chat") == calls
        assert all(g.cached for g in again.games) and again.winner == first.winner
        # swapping the arguments is the same two games, read from the other side
        swapped = run(judged(ollama_server, "Q?", BETA, ALPHA, cache=cache))
        assert ollama_server.count("/api/chat") == calls and swapped.winner == "B"
        # an edited template is a new judgment
        custom = tmp_path / "my.txt"
        custom.write_text(load_template("pairwise").text + "\nBe strict.\n")
        run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache, template=str(custom)))
        assert ollama_server.count("/api/chat") == calls + 2


def test_unparseable_is_retried_then_reported_and_not_cached(ollama_server, tmp_path: Path) -> None:
    ollama_server.reply = lambda m, f, o: "I really cannot decide between these two."
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        v = run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache, attempts=2))
        assert v.winner is None and v.unparsed
        assert all(g.pick is None and g.attempts == 2 and "cannot decide" in g.raw for g in v.games)
        assert ollama_server.count("/api/chat") == 4       # 2 orders x 2 bounded attempts
        assert len(cache) == 0
        # retries change the seed (a greedy judge would repeat itself)
        seeds = sorted(b["options"]["seed"] for b in ollama_server.bodies("/api/chat"))
        assert len(set(seeds)) == 2
        # the next run asks again: failures are not verdicts
        ollama_server.reply = prefers("Alpha")
        v = run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache, attempts=2))
        assert v.winner == "A" and ollama_server.count("/api/chat") == 6


def test_bracketed_verdict_in_free_text_is_recovered(ollama_server) -> None:
    # a judge that ignores the schema but writes MT-Bench style: the last [[X]] counts
    def reply(messages, fmt, options):
        a, _ = pairwise_answers(messages)
        return f"Format is [[A]], [[B]] or [[C]]. Verdict: [[{'A' if 'Alpha' in a else 'B'}]]"
    ollama_server.reply = reply
    v = run(judged(ollama_server, "Q?", ALPHA, BETA))
    assert v.winner == "A" and v.consistent


def test_server_errors_propagate_and_cache_nothing(ollama_server, tmp_path: Path) -> None:
    ollama_server.fail("status", status=500, times=-1)
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(Transient):
            run(judged(ollama_server, "Q?", ALPHA, BETA, cache=cache))
        assert len(cache) == 0


def test_parse_verdict_edge_cases() -> None:
    assert parse_verdict({"winner": "Assistant B", "reason": "x"}, "")["winner"] == "B"
    assert parse_verdict(None, 'Sure! {"reason": "same", "winner": "Tie"}')["winner"] == "tie"
    assert parse_verdict(None, '{"winner": "C"')["winner"] == "tie"          # cut-off JSON, field still readable
    assert parse_verdict({"winner": "both are bad"}, "") is None
    assert parse_verdict(None, "") is None
    assert normalize_winner("[[A]]") == "A" and normalize_winner(3) is None


def test_template_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no such judge template"):
        load_template(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("=== system ===\nno user part\n")
    with pytest.raises(TemplateError, match="bad.txt"):
        load_template(bad)
    no_answers = tmp_path / "na.txt"
    no_answers.write_text("=== user ===\n{prompt} {answer_a}\n")
    with pytest.raises(TemplateError, match="answer_b"):
        run(judge_pair(object(), "Q", "a", "b", template=str(no_answers)))


def test_template_substitution_does_not_rescan_answers() -> None:
    msgs = load_template("pairwise").render(prompt="P", answer_a="{answer_b}", answer_b="B!", known_good=None)
    user = msgs[-1]["content"]
    assert judged_blocks(msgs)["Assistant A's Answer"] == "{answer_b}"
    assert '{"reason":' in user  # the JSON example in the template survives


# --------------------------------------------------------------------------------------------- score mode

async def scored(server, *args, **kwargs):
    client = client_for(server)
    try:
        return await score_answer(client, *args, **kwargs)
    finally:
        await client.aclose()


def test_score_asks_the_seed_question_under_a_schema_and_caches(ollama_server, tmp_path: Path) -> None:
    ollama_server.reply = lambda m, f, o: json.dumps({"score": 85})
    prompt = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n### Instruction:\nName the capital of France.\n\n### Response:\n")
    with JudgeCache(tmp_path / "c.sqlite") as cache:
        s = run(scored(ollama_server, prompt, "Paris.", known_good="The capital is Paris.", cache=cache))
        assert s.value == 85.0 and not s.cached
        body = ollama_server.bodies("/api/chat")[0]
        assert body["format"]["properties"]["score"]["maximum"] == 100   # the reply's shape is asked for
        blocks = judged_blocks(body["messages"])
        assert blocks["Input"].endswith("### Instruction:\nName the capital of France.")  # no response marker
        assert blocks["Correct Output"] == "The capital is Paris." and blocks["Model Response"] == "Paris."
        assert "score the model response on a scale from 0 to 100" in body["messages"][-1]["content"]
        again = run(scored(ollama_server, prompt, "Paris.", known_good="The capital is Paris.", cache=cache))
        assert again.cached and again.value == 85.0 and ollama_server.count("/api/chat") == 1


def test_a_number_in_the_judges_prose_is_not_a_score(ollama_server) -> None:
    ollama_server.reply = lambda m, f, o: "I'd give it 85 out of 100, on a scale from 0 to 100."
    s = run(scored(ollama_server, "Q", "A", attempts=2))
    assert s.value is None and ollama_server.count("/api/chat") == 2


def test_score_unparseable_and_empty(ollama_server) -> None:
    ollama_server.reply = lambda m, f, o: "Great answer!"
    s = run(scored(ollama_server, "Q", "A", attempts=3))
    assert s.value is None and s.raw == "Great answer!" and s.attempts == 3
    assert ollama_server.count("/api/chat") == 3
    empty = run(scored(ollama_server, "Q", "   "))
    assert empty.value == 0.0 and ollama_server.count("/api/chat") == 3


def test_score_many_and_summary(ollama_server) -> None:
    from judge.scoring import score_many, summarize_scores

    def reply(messages, fmt, options):
        answer = scored_answer(messages)
        return "90" if answer == "good" else ("no idea" if answer == "odd" else "30")

    ollama_server.reply = reply

    async def go():
        client = client_for(ollama_server)
        try:
            return await score_many(client, [("Q", "good", None), ("Q", "bad", None), ("Q", "odd", None),
                                             ("Q", "good", "ref")], attempts=1)
        finally:
            await client.aclose()

    scores = asyncio.run(go())
    assert [s.value for s in scores] == [90.0, 30.0, None, 90.0]
    summary = summarize_scores(scores, n_boot=200)
    assert summary["mean"] == pytest.approx(70.0) and summary["parsed"] == 3 and summary["unparsed"] == 1
    assert 30.0 <= summary["ci_low"] <= summary["ci_high"] <= 90.0
