"""Logprob verdicts from a local judge (the tiny model): scores match a direct computation, always parse."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.evaluate import evaluate
from judge.logprob import CANDIDATES, PREFIX, LogprobJudge
from judge.pairwise import judge_pair
from judge.prompts import load_template
from prefloop.llm import make_client


def test_scores_are_the_log_probabilities_of_each_verdict(tiny_model_dir: Path) -> None:
    import torch

    judge = LogprobJudge(make_client(f"local:{tiny_model_dir}"))
    messages = load_template("pairwise").render(prompt="Name a color.", answer_a="Red.", answer_b="Seven.",
                                                known_good=None)
    scores = judge.scores(messages)
    assert set(scores) == set(CANDIDATES) and all(s < 0 for s in scores.values())
    # independent route: tokenize the whole text at once and score the tail token by token
    model, tok = judge.client.load()
    context = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    for name, cont in CANDIDATES.items():
        ctx_ids = tok(context + PREFIX, add_special_tokens=False)["input_ids"]
        ids = tok(context + PREFIX + cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        total = sum(float(logp[i - 1, ids[i]]) for i in range(len(ctx_ids), len(ids)))
        assert scores[name] == pytest.approx(total, abs=1e-3)
    reply = asyncio.run(judge.chat(messages))
    assert reply.data["winner"] == max(scores, key=scores.get)
    assert sum(reply.data["probs"].values()) == pytest.approx(1.0)


def test_local_judge_always_parses_in_both_orders(tiny_model_dir: Path) -> None:
    async def go():
        judge = LogprobJudge(make_client(f"local:{tiny_model_dir}"))
        try:
            return await judge_pair(judge, "Name a color.", "Red.", "Seven.")
        finally:
            await judge.aclose()

    v = asyncio.run(go())
    assert not v.unparsed and len(v.games) == 2
    assert v.winner in ("A", "B", "tie")
    assert (v.consistent is True) == (v.games[0].pick == v.games[1].pick)


def test_evaluate_with_a_local_judge_uses_logprob(tmp_path: Path, tiny_model_dir: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["Name a color.", "Say hi.", "Count to 3."]))
    cfg = JudgeConfig(policy=str(tiny_model_dir), reference=str(tiny_model_dir), prompts=str(prompts),
                      judges=[f"local:{tiny_model_dir}"], output_dir=str(tmp_path / "out"), max_tokens=8,
                      judge_identical=True, n_boot=200)
    r = evaluate(cfg).headline
    assert r.n == 3 and r.diagnostics["parse_rate"] == 1.0 and r.diagnostics["games"] == 6
    assert r.ci_low <= r.win_rate <= r.ci_high



def test_a_local_judges_score_is_its_expected_score_over_the_written_values(tiny_model_dir: Path) -> None:
    """A score-mode request to a local judge is answered from token probabilities: the expectation of the
    0-100 values under the judge's probability of writing each one (computed here from whole-text forwards)."""
    import math

    import torch

    from judge.logprob import SCORE_PREFIX, SCORE_VALUES
    from judge.scoring import score_answer

    judge = LogprobJudge(make_client(f"local:{tiny_model_dir}"))
    messages = load_template("score").render(prompt="Name a color.", answer="Red.", known_good="Blue.")
    model, tok = judge.client.load()
    context = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    logps = {}
    for v in SCORE_VALUES:
        base = tok(context + SCORE_PREFIX, add_special_tokens=False)["input_ids"]
        ids = tok(context + SCORE_PREFIX + f"{v}}}", add_special_tokens=False)["input_ids"]
        start = next((i for i, (a, b) in enumerate(zip(base, ids)) if a != b), len(base))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        logps[v] = sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids)))
    top = max(logps.values())
    z = sum(math.exp(lp - top) for lp in logps.values())
    expected = sum(v * math.exp(lp - top) / z for v, lp in logps.items())
    value, probs = judge.score(messages)
    assert value == pytest.approx(expected, abs=1e-2) and sum(probs.values()) == pytest.approx(1.0)
    got = asyncio.run(score_answer(judge, "Name a color.", "Red.", known_good="Blue."))
    assert got.value == pytest.approx(expected, abs=1e-2) and got.attempts == 1


def test_scores_in_rank_preflight_and_judge_come_from_probabilities(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A local judge that scores answers (the generator's rank strategy, the preflight, the judge stage's 0-100
    scores) always gives a score: read from probabilities, not generated (the tiny model never writes one)."""
    from generator.config import GenerateConfig
    from generator.run import Context
    from judge.logprob import scoring_client
    from prefloop.records import PromptRecord

    spec = f"local:{tiny_model_dir}"
    client = make_client(spec)
    assert isinstance(scoring_client(spec, client), LogprobJudge)
    assert scoring_client(spec, client, "generate") is client
    ctx = Context(GenerateConfig(source="unused", output=str(tmp_path / "p.jsonl"), strategy="rank",
                                 models=[spec], judge=spec), {spec: client})
    rec = PromptRecord(id="1", prompt="Name a color.", known_good="Blue.")
    scores = [asyncio.run(ctx.score(rec, text)) for text in ("Red.", "Seven.")]
    assert all(s.value is not None and 0 <= s.value <= 100 for s in scores)
