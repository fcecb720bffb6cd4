"""The judge measured before its verdict: accuracy on pairs whose better side is known, the position-debiased
verdict from log-odds (worked examples), and a headline that shows no win rate from a judge at chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.answers import answer_settings, gen_options, local_spec
from judge.evaluate import evaluate
from judge.report import headline
from judge.results import Game, JudgmentRow
from judge.stats import position_and_content
from judge.validation import choose_rule, stronger_judge, summarize_validation
from ollama_server import pairwise_answers, scored_answer
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy


def test_position_and_content_split_the_two_orders_log_odds():
    # L1 = p + c = 3 (policy first), L2 = p − c = 1 (policy second): p = 2, c = 1
    assert position_and_content(3.0, 1.0) == (2.0, 1.0)
    # a judge that only likes position one says the same in both orders: no content preference at all
    assert position_and_content(2.5, 2.5) == (2.5, 0.0)
    # it prefers the first answer (p = 1.5) but the reference's content (c = −0.5)
    assert position_and_content(1.0, 2.0) == (1.5, -0.5)


def row(i: int, outcome: str, l1: float | None, l2: float | None, first_wins: bool = True) -> JudgmentRow:
    """A validation row (chosen in the policy's place) with the two games' log-odds."""
    p, c = position_and_content(l1, l2) if l1 is not None and l2 is not None else (None, None)
    picks = ("policy", "reference") if first_wins else ("policy", "policy")
    return JudgmentRow(judge="j", prompt_id=f"v{i}", outcome=outcome, winner=None, len_policy=20, len_reference=10,
                       consistent=outcome != "tie", games=[Game(first="policy", pick=picks[0], logodds=l1),
                                                          Game(first="reference", pick=picks[1], logodds=l2)],
                       position=p, content=c)


def test_a_first_position_judge_scores_half_and_debiasing_recovers_its_content_preference():
    # every game picks the answer shown first (ties in both-orders folding), but the log-odds lean to the chosen
    # side by 0.5 on three pairs of four: L1 = 2 + 0.5, L2 = 2 − 0.5; the fourth leans the wrong way
    rows = [row(i, "tie", 2.5, 1.5) for i in range(3)] + [row(3, "tie", 1.5, 2.5)]
    v = summarize_validation("j", "pairs.jsonl", rows, n_boot=500)
    assert v.accuracy == 0.5 and v.ties == 4 and v.first_position_rate == 1.0
    assert v.debiased_accuracy == 0.75 and v.mean_position == 2.0
    assert [r.decided("debiased") for r in rows] == ["win", "win", "win", "loss"]
    # 3 of 4 is not measurably above chance on four pairs: the both-orders rule stays
    assert v.debiased_ci_low <= 0.5 and v.rule == "orders" and not v.above_chance
    many = [row(i, "tie", 2.5, 1.5) for i in range(12)]
    strong = summarize_validation("j", "pairs.jsonl", many, n_boot=500)
    assert strong.debiased_accuracy == 1.0 and strong.rule == "debiased" and strong.above_chance


def test_debiasing_is_not_used_where_it_does_not_beat_the_orders_rule():
    rows = [row(i, "win", 3.0, -3.0, first_wins=False) for i in range(10)]   # consistent and right: 100 % either way
    v = summarize_validation("j", "p", rows, n_boot=200)
    assert v.accuracy == 1.0 and v.debiased_accuracy == 1.0 and choose_rule(v) == "orders"
    no_logodds = summarize_validation("j", "p", [row(i, "win", None, None, False) for i in range(4)], n_boot=200)
    assert no_logodds.debiased_accuracy is None and no_logodds.rule == "orders"


def test_stronger_judge_is_never_the_judge_in_use():
    assert stronger_judge("local:smollm2") == "ollama:llama3.1:8b"
    assert stronger_judge("ollama:llama3.1:8b") == "ollama:llama3.1:70b"
    assert stronger_judge("llama3.1:70b") is None


# ------------------------------------------------------------------------------------ end to end

QUESTIONS = ["Name a planet.", "Name a color.", "Name a river.", "Name a city.", "Name a tree.", "Name a bird.",
             "Name a metal.", "Name a fish."]


def write(tmp_path: Path) -> tuple[Path, Path]:
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q, "known_good": f"Known {i}."}) + "\n"
                               for i, q in enumerate(QUESTIONS)))
    pairs = tmp_path / "heldout_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"h{i}", "prompt": q, "chosen": f"GOOD answer {i}, thank you.",
                                         "rejected": f"bad answer {i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    return prompts, pairs


def config(tmp_path: Path, prompts: Path, pairs: Path) -> JudgeConfig:
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(prompts), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), validate=str(pairs), n_boot=300, attempts=1)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    o = gen_options(cfg)
    for side, model in (("policy", cfg.policy), ("reference", cfg.reference)):
        key = answer_settings(local_spec(model), o, cfg)
        (out / f"gen-{side}.jsonl").write_text("".join(
            json.dumps({"id": f"p{i}", "answer": f"{side} says {i}", "settings": key}) + "\n" for i in range(8)))
    return cfg


def client(server):  # noqa: ANN001
    return make_client("ollama:judge", host=server.url, retry=RetryPolicy(attempts=1))


def test_a_judge_that_always_picks_the_first_answer_gets_no_win_rate(tmp_path: Path, ollama_server) -> None:
    prompts, pairs = write(tmp_path)
    cfg = config(tmp_path, prompts, pairs)
    ollama_server.reply = lambda m, f, o: "50" if scored_answer(m) is not None else json.dumps(
        {"reason": "first", "winner": "A"})
    res = evaluate(cfg, clients={"ollama:judge": client(ollama_server)})
    v = res.headline.validation
    assert v.n == 8 and v.accuracy == 0.5 and v.first_position_rate == 1.0 and not v.above_chance
    lines = headline(res).lines
    assert lines[0].startswith("Judge `ollama:judge` picks the known-better answer of 8 held-out pairs **50.0%**")
    assert lines[1].startswith("No win rate") and "ollama:llama3.1:8b" in lines[1]
    assert not any("win rate (95% CI" in line for line in lines)
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("picks the known-better answer") < md.index("No win rate") < md.index("Skill:")
    assert (tmp_path / "out" / "validation.jsonl").exists()


def test_a_judge_that_tells_better_from_worse_gets_its_win_rate(tmp_path: Path, ollama_server) -> None:
    prompts, pairs = write(tmp_path)
    cfg = config(tmp_path, prompts, pairs)

    def fair(messages, fmt, options):  # noqa: ANN001, ANN202
        if scored_answer(messages) is not None:
            return "70"
        a, b = pairwise_answers(messages)
        winner = "A" if a.startswith(("GOOD", "policy")) else "B"
        return json.dumps({"reason": "fair", "winner": winner})

    ollama_server.reply = fair
    res = evaluate(cfg, clients={"ollama:judge": client(ollama_server)})
    v = res.headline.validation
    assert v.accuracy == 1.0 and v.above_chance and v.longer_pick_rate == 1.0
    assert res.headline.win_rate == 1.0
    lines = headline(res).lines
    assert lines[1].startswith("**100.0%** win rate") and "preferred over its reference" in lines[1]
    assert res.retention.policy.score == 70.0 and res.retention.scored_by == "ollama:judge"


def test_the_local_judge_records_log_odds_and_its_debiased_accuracy(tmp_path: Path, tiny_model_dir: Path) -> None:
    prompts, pairs = write(tmp_path)
    cfg = config(tmp_path, prompts, pairs)
    cfg.judges = [f"local:{tiny_model_dir}"]
    cfg.score_known_good = False
    res = evaluate(cfg)
    rows = [json.loads(x) for x in (tmp_path / "out" / "validation.jsonl").read_text().splitlines()]
    for r in rows:
        l1 = next(g["logodds"] for g in r["games"] if g["first"] == "policy")
        l2 = next(g["logodds"] for g in r["games"] if g["first"] == "reference")
        assert (r["position"], r["content"]) == pytest.approx(((l1 + l2) / 2, (l1 - l2) / 2))
    v = res.headline.validation
    assert v.debiased_accuracy is not None and v.mean_position is not None and v.rule in ("orders", "debiased")
