"""Log-odds verdicts from served judges: token log-probabilities through the official ``ollama`` client and the
OpenAI-compatible endpoint of the test server, the log-odds read at the verdict token, and a position-biased
judge whose content verdict the debiased rule recovers where the both-orders rule ties, measured on known pairs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from judge.answers import answer_settings, gen_options, local_spec
from judge.config import JudgeConfig
from judge.evaluate import evaluate
from judge.logprob import NO_LOGPROBS, ServedLogprobJudge, verdict_logodds
from judge.pairwise import VERDICT_SCHEMA
from judge.report import order_lines
from judge.results import Game, JudgmentRow
from judge.validation import order_flips
from ollama_server import pairwise_answers, scored_answer
from prefloop.llm import make_client
from prefloop.llm.base import GenOptions, ServerFatal
from prefloop.llm.retry import RetryPolicy

POSITION = 2.0  # the judge's fixed pull toward the answer shown first, in log-odds
WINNER_AT = re.compile(r'"winner"\s*:\s*"$')


def quality(answer: str) -> float:
    """What the scripted judge thinks of an answer: GOOD ones score 0.5, others 0, plus a fixed noise in ±0.7 from
    the text, so some known pairs are judged the wrong way round (the judge is good, not perfect)."""
    noise = int(hashlib.sha256(answer.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 1.4 - 0.7
    return (0.5 if answer.startswith(("GOOD", "policy")) else 0.0) + noise


def logodds_of(messages) -> float:  # noqa: ANN001
    a, b = pairwise_answers(messages)
    return POSITION + quality(a) - quality(b)


def distribution(messages) -> dict[str, float]:  # noqa: ANN001
    """Log-probabilities of the verdict tokens: A against B at the judge's log-odds, a tie unlikely."""
    half = logodds_of(messages) / 2
    logits = {"A": half, "B": -half, "tie": -4.0}
    norm = math.log(sum(math.exp(v) for v in logits.values()))
    return {k: v - norm for k, v in logits.items()}


def biased_judge(messages, fmt, options):  # noqa: ANN001, ANN201
    """Writes the likelier verdict (a position term of 2, content terms within ±1.9: always A)."""
    if scored_answer(messages) is not None:
        return "60"
    dist = distribution(messages)
    return json.dumps({"reason": "compared both", "winner": max(dist, key=dist.get)})


def alternatives(messages, fmt, options, before, token):  # noqa: ANN001, ANN201
    if WINNER_AT.search(before):
        return distribution(messages)
    return {token: -0.01}


QUESTIONS = [f"Question number {i}: say something useful." for i in range(24)]


def setup(tmp_path: Path) -> JudgeConfig:
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q, "known_good": f"Known {i}."}) + "\n"
                               for i, q in enumerate(QUESTIONS[:8])))
    pairs = tmp_path / "heldout_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"h{i}", "prompt": q, "chosen": f"GOOD answer {i}, thank you.",
                                         "rejected": f"bad answer {i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(prompts), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), validate=str(pairs), n_boot=500, attempts=1,
                      score_known_good=False)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    o = gen_options(cfg)
    for side, model in (("policy", cfg.policy), ("reference", cfg.reference)):
        key = answer_settings(local_spec(model), o, cfg)
        (out / f"gen-{side}.jsonl").write_text("".join(
            json.dumps({"id": f"p{i}", "answer": f"{side} says {i}", "settings": key}) + "\n" for i in range(8)))
    return cfg


def client(server, spec: str = "ollama:judge"):  # noqa: ANN001, ANN201
    if spec.startswith("openai:"):
        return make_client(f"{spec}@{server.url}/v1", retry=RetryPolicy(attempts=1))
    return make_client(spec, host=server.url, retry=RetryPolicy(attempts=1))


# ---- the test server and the clients --------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False])
def test_the_official_client_gets_token_logprobs_from_the_test_server(ollama_server, stream: bool) -> None:
    ollama_server.alternatives = alternatives
    ollama_server.reply = biased_judge
    judge = client(ollama_server)
    judge.stream = stream
    judge.top_logprobs = 3
    messages = [{"role": "user", "content": "[Assistant A's Answer id 1]\nGOOD one\n[End of Assistant A's Answer id "
                 "1]\n[Assistant B's Answer id 2]\nbad\n[End of Assistant B's Answer id 2]"}]
    reply = asyncio.run(judge.chat(messages, schema=VERDICT_SCHEMA))
    body = ollama_server.bodies("/api/chat")[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    tokens = reply.logprobs
    assert "".join(t["token"] for t in tokens) == reply.text
    assert all(len(t["top"]) <= 3 and t["top"][0][1] >= t["top"][-1][1] for t in tokens)
    logodds, why = verdict_logodds(tokens)
    assert why == "" and logodds == pytest.approx(logodds_of(messages), abs=1e-6)


def test_top_logprobs_out_of_range_is_refused_as_ollama_does(ollama_server) -> None:
    judge = client(ollama_server)
    judge.top_logprobs = 21
    with pytest.raises(ServerFatal, match="top_logprobs must be between 0 and 20"):
        asyncio.run(judge.chat([{"role": "user", "content": "hi"}], options=GenOptions()))
    missing = client(ollama_server, "ollama:no-such-model")
    missing.top_logprobs = 21
    with pytest.raises(ServerFatal, match="top_logprobs must be between"):  # checked before the model
        asyncio.run(missing.chat([{"role": "user", "content": "hi"}]))


def test_a_server_older_than_0_12_11_returns_no_logprobs(ollama_server) -> None:
    ollama_server.version = "0.12.10"
    judge = client(ollama_server)
    judge.top_logprobs = 5
    reply = asyncio.run(judge.chat([{"role": "user", "content": "hi"}]))
    assert reply.text and reply.logprobs is None
    assert verdict_logodds(reply.logprobs) == (None, NO_LOGPROBS)


def test_the_openai_compatible_endpoint_returns_logprobs_in_openai_shape(ollama_server) -> None:
    ollama_server.alternatives = alternatives
    ollama_server.reply = biased_judge
    judge = client(ollama_server, "openai:judge")
    judge.top_logprobs = 4
    messages = [{"role": "user", "content": "[Assistant A's Answer id 1]\nbad\n[End of Assistant A's Answer id 1]\n"
                 "[Assistant B's Answer id 2]\nGOOD two\n[End of Assistant B's Answer id 2]"}]
    reply = asyncio.run(judge.chat(messages, schema=VERDICT_SCHEMA))
    assert ollama_server.bodies("/v1/chat/completions")[-1]["top_logprobs"] == 4
    logodds, _ = verdict_logodds(reply.logprobs)
    assert logodds == pytest.approx(logodds_of(messages), abs=1e-6)


def test_the_verdict_token_is_found_when_it_carries_the_quote_and_tie_is_cut() -> None:
    text = ['{"', 'reason', '":', ' "', 'x', ' \\"winner\\": \\"B', '",', ' "', 'winner', '":', ' "A', '"}']
    tokens = [{"token": t, "logprob": -0.1, "top": []} for t in text]
    tokens[10]["top"] = [[' "A', -0.5], [' "B', -1.5], [' "t', -2.0], [' "Assistant', -3.0], [' "A', -2.5]]
    logodds, _ = verdict_logodds(tokens)
    assert logodds == pytest.approx(math.log(math.exp(-0.5) + math.exp(-2.5)) + 1.5)
    tokens[10]["top"] = [[' "A', -0.5], [' "t', -2.0]]
    assert verdict_logodds(tokens)[0] is None


# ---- the goal: a position-biased served judge, measured on known pairs -----------------------------------------

@pytest.mark.parametrize("spec", ["ollama:judge", "openai:judge"])
def test_debiasing_recovers_the_content_verdict_where_both_orders_tie(tmp_path: Path, ollama_server,
                                                                      spec: str) -> None:
    ollama_server.reply = biased_judge
    ollama_server.alternatives = alternatives
    cfg = setup(tmp_path)
    cfg.judges = [spec]
    res = evaluate(cfg, clients={spec: client(ollama_server, spec)})
    v = res.headline.validation
    # the judge always writes A: both orders disagree on every pair, so the both-orders rule ties them all
    assert v.n == 24 and v.accuracy == 0.5 and v.position_consistency == 0.0
    rows = [json.loads(x) for x in (tmp_path / "out" / "validation.jsonl").read_text().splitlines()]
    assert all(g["logodds"] is not None for r in rows for g in r["games"])
    truth = sum(quality(f"GOOD answer {i}, thank you.") > quality(f"bad answer {i}") for i in range(24)) / 24
    assert 0.5 < truth < 1.0  # the scripted judge is good, not perfect: the figure below is measured
    assert v.debiased_accuracy == pytest.approx(truth)
    assert v.mean_position == pytest.approx(POSITION, abs=1e-6)
    assert v.debiased_ci_low > 0.5 and v.rule == "debiased" and "beat" in v.rule_reason
    assert res.headline.rule == "debiased"
    requests = ollama_server.count("/api/chat") + ollama_server.count("/v1/chat/completions")
    assert requests == 2 * (24 + 8)  # one request per order, as without log-probabilities
    md = (tmp_path / "out" / "report.md").read_text()
    table = md[md.index("| judge | pairs | accuracy"):]
    assert f"| {spec} | 24 | 50.0% |" in table and f"{100 * truth:.1f}%" in table.split("\n")[2]
    # on the held-out prompts: every verdict came with log-odds, every pair flipped with the order, none after
    d = res.headline.diagnostics
    assert (d["logodds_verdicts"], d["verdicts"], d["flipped"]) == (16, 16, 8)
    assert d["flip_rate"] == 1.0 and d["flip_rate_debiased"] == 0.0
    assert f"| 100.0% | 0.0% | 16 of 16 |" in md
    assert order_lines(res) == [f"judge {spec}: 16 of 16 verdicts from log-odds; 8 pairs flipped between orders "
                                "(100.0%), 0.0% after debiasing; verdicts by debiased"]


def row(l1: float | None, l2: float | None, consistent: bool = False) -> JudgmentRow:
    games = [Game(first="policy", pick="policy", logodds=l1), Game(first="reference", pick="reference", logodds=l2)]
    return JudgmentRow(judge="j", prompt_id="p", outcome="tie", winner="tie", len_policy=1, len_reference=1,
                       consistent=consistent, games=games)


def test_flip_rates_before_and_after_the_mean_position_term() -> None:
    # mean position term p = (3+1 + 2+2 + 1+1)/6 = 5/3. Policy picked first when L1 - p > 0, second when L2 - p < 0:
    # (3, 1): 4/3, -2/3 agree; (2, 2): 1/3, 1/3 disagree; (1, 1): -2/3, -2/3 disagree -> 2 of 3
    rows = [row(3.0, 1.0), row(2.0, 2.0), row(1.0, 1.0, consistent=True), row(None, None)]
    d = order_flips(rows)
    assert (d["flipped"], d["logodds_verdicts"], d["verdicts"]) == (3, 6, 8)
    assert d["flip_rate"] == 0.75 and d["flip_rate_debiased"] == pytest.approx(2 / 3)
    assert order_flips([row(None, None)])["flip_rate_debiased"] is None


def test_without_logprobs_both_orders_decide_and_the_report_says_why(tmp_path: Path, ollama_server) -> None:
    ollama_server.version = "0.12.10"
    ollama_server.reply = biased_judge
    cfg = setup(tmp_path)
    res = evaluate(cfg, clients={"ollama:judge": client(ollama_server)})
    v = res.headline.validation
    assert v.rule == "orders" and v.debiased_accuracy is None and v.accuracy == 0.5
    assert "no token log-probabilities" in v.rule_reason
    assert "no token log-probabilities" in (tmp_path / "out" / "report.md").read_text()


def test_generate_asks_no_logprobs(tmp_path: Path, ollama_server) -> None:
    ollama_server.reply = biased_judge
    cfg = setup(tmp_path)
    cfg.verdict = "generate"
    evaluate(cfg, clients={"ollama:judge": client(ollama_server)})
    assert not any("logprobs" in b for b in ollama_server.bodies("/api/chat"))


def test_the_wrapper_passes_scores_through(ollama_server) -> None:
    ollama_server.reply = lambda m, f, o: json.dumps({"reason": "ok", "score": 70})
    judge = ServedLogprobJudge(client(ollama_server))
    reply = asyncio.run(judge.chat([{"role": "user", "content": "score"}], schema={"type": "object"}))
    assert "logodds" not in reply.data and judge.with_logodds == judge.without == 0
    assert judge.spec == "ollama:judge+logodds" and judge.stats.requests == 1


def test_a_server_that_refuses_logprobs_is_asked_without_them(ollama_server) -> None:
    ollama_server.reply = biased_judge
    ollama_server.fail("status", endpoint="/v1/chat/completions", status=400,
                       message="logprobs is not supported with this model")
    judge = ServedLogprobJudge(client(ollama_server, "openai:judge"))
    messages = [{"role": "user", "content": "judge this"}]
    first = asyncio.run(judge.chat(messages, schema=VERDICT_SCHEMA))
    second = asyncio.run(judge.chat(messages, schema=VERDICT_SCHEMA))
    assert "logodds" not in first.data and "logodds" not in second.data and judge.without == 2
    sent = ollama_server.bodies("/v1/chat/completions")
    assert [b.get("logprobs") for b in sent] == [True, None, None]  # refused once, then never asked again
    assert "refused log-probabilities" in judge.why


def test_other_errors_are_not_taken_for_a_refusal(ollama_server) -> None:
    ollama_server.fail("status", endpoint="/v1/chat/completions", status=400, message="bad request")
    judge = ServedLogprobJudge(client(ollama_server, "openai:judge"))
    with pytest.raises(ServerFatal, match="bad request"):
        asyncio.run(judge.chat([{"role": "user", "content": "x"}], schema=VERDICT_SCHEMA))
