"""``evaluate`` end to end: answers from real (tiny) models, a scripted judge on the Ollama test server, files on
disk, statistics that agree with a recount, and a judge server failing mid-run that a rerun finishes from the
cache without asking any finished judgment again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.answers import answer_settings, gen_options, local_spec
from judge.evaluate import evaluate
from judge.results import JudgeResults
from judge.selfpref import self_preference_warnings
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy
from ollama_server import pairwise_answers, scored_answer

QUESTIONS = ["Name the capital of France.", "Give a synonym for 'happy'.", "What is 7 times 6?",
             "Rewrite politely: give me the report.", "Name a primary color.", "Spell 'necessary'.",
             "What is the opposite of 'cold'?", "Name a planet."]


def write_pairs(path: Path, n: int = 8, generator: str = "ollama:llama3.1:70b") -> Path:
    rows = [{"id": f"p{i}", "prompt": q, "chosen": f"Kind answer {i}.", "rejected": f"Rude answer {i}.",
             "meta": {"settings": {"strategy": "rewrite", "model": generator}}} for i, q in enumerate(QUESTIONS[:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_judge(messages, fmt, options):
    """A consistent judge with an arbitrary but checkable taste: the answer with the larger sha256 wins (and a
    score-mode prompt gets a score from the same hash)."""
    scored = scored_answer(messages)
    if scored is not None:
        return str(int(rank(scored)[:4], 16) % 101)
    a, b = pairwise_answers(messages)
    return json.dumps({"reason": "hash", "winner": "A" if rank(a) > rank(b) else "B"})


def fast_client(server):
    return make_client("ollama:judge", host=server.url,
                       retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02))


def expected_outcomes(out_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (out_dir / "answers.jsonl").read_text().splitlines()]
    outs = []
    for r in rows:
        p, q = r["policy_answer"], r["reference_answer"]
        outs.append("tie" if p.strip() == q.strip() else ("win" if rank(p) > rank(q) else "loss"))
    return outs


@pytest.fixture(scope="module")
def second_tiny_model(tmp_path_factory, tiny_model_dir) -> Path:
    """Another tiny model (other random weights, same tokenizer) so the two sides answer differently."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny2") / "model"
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_evaluate_end_to_end_tiny_models(ollama_server, tmp_path: Path, tiny_model_dir: Path,
                                         second_tiny_model: Path) -> None:
    ollama_server.reply = hash_judge
    pairs = write_pairs(tmp_path / "heldout.jsonl", generator="ollama:judge")
    cfg = JudgeConfig(policy=str(tiny_model_dir), reference=str(second_tiny_model), prompts=str(pairs),
                      judges=["ollama:judge"], output_dir=str(tmp_path / "out"), max_tokens=12, batch_size=3,
                      n_boot=500, adversarial=2)
    result = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    out = tmp_path / "out"
    assert result.complete
    for name in ("answers.jsonl", "judgments.jsonl", "results.json", "report.md", "report.html", "win_rate.png"):
        assert (out / name).exists(), name
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [f"p{i}" for i in range(8)]
    assert all(a["known_good"].startswith("Kind answer") for a in answers)
    assert sum(a["policy_answer"] != a["reference_answer"] for a in answers) >= 6

    # the statistics agree with a recount from the raw answers and the judge's known taste
    outs = expected_outcomes(out)
    res = JudgeResults.read(out / "results.json")
    head = res.headline
    assert (head.wins, head.ties, head.losses, head.n) == (outs.count("win"), outs.count("tie"),
                                                           outs.count("loss"), 8)
    assert head.win_rate == pytest.approx((outs.count("win") + outs.count("tie") / 2) / 8)
    assert head.ci_low <= head.win_rate <= head.ci_high
    assert head.diagnostics["position_consistency"] == 1.0 and head.diagnostics["parse_rate"] == 1.0
    assert head.lc_win_rate is not None and 0 <= head.lc_win_rate <= 1
    # the judge saw the held-out chosen answer as its reference
    first_user = ollama_server.bodies("/api/chat")[0]["messages"][-1]["content"]
    assert "[Reference Answer id " in first_user and "]\nKind answer" in first_user
    # self-preference: the pairs were generated by the judge model itself
    assert any("generated the training pairs" in w for w in res.warnings)
    # adversarial check ran and reported
    assert res.robustness["n"] == 2 and "flip_rate" in res.robustness["injection"]
    report = (out / "report.md").read_text()
    assert "Held-out win rate" in report and "side by side" in report and "Robustness" in report

    # a rerun costs no judge calls and no generation (answers resumed, judgments from the runner's file)
    calls = ollama_server.count("/api/chat")
    again = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert ollama_server.count("/api/chat") == calls
    assert again.headline.win_rate == head.win_rate


def pregenerate(cfg: JudgeConfig, n: int = 8) -> None:
    """Write both models' answers as a finished earlier generation would have (the resume path)."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    o = gen_options(cfg)
    for side, spec in (("policy", local_spec(cfg.policy)), ("reference", local_spec(cfg.reference))):
        settings = answer_settings(spec, o, cfg)
        rows = [{"id": f"p{i}", "answer": f"{side} answer number {i}", "settings": settings} for i in range(n)]
        (out / f"gen-{side}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_judge_server_failing_mid_run_resumes_with_no_repeated_calls(ollama_server, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl")
    cfg = JudgeConfig(policy="/models/policy", reference="/models/ref", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), concurrency=1, n_boot=200)
    pregenerate(cfg)
    seen = {"n": 0}

    def dies_after_five(messages, fmt, options):
        seen["n"] += 1
        if seen["n"] == 5:  # from the 6th request on the server answers 500
            ollama_server.fail("status", status=500, times=-1)
        return hash_judge(messages, fmt, options)

    ollama_server.reply = dies_after_five
    first = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert not first.complete
    assert any("incomplete" in w for w in first.warnings)
    failures = Path(cfg.output_dir) / "judgments.jsonl.failures.jsonl"
    assert failures.exists() and "Transient" in failures.read_text()
    ok_before = [json.dumps(e.body["messages"]) for e in ollama_server.requests("/api/chat") if e.status == 200]
    assert len(ok_before) == 5

    ollama_server.clear_faults()
    ollama_server.reply = hash_judge
    second = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert second.complete and second.headline.n == 8
    ok_after = [json.dumps(e.body["messages"]) for e in ollama_server.requests("/api/chat") if e.status == 200]
    new = ok_after[len(ok_before):]
    assert not set(new) & set(ok_before), "a finished judgment was asked again"
    verdicts = [m for m in new if "Assistant A's Answer" in m]   # the 0-100 scores follow a complete judging
    assert len(verdicts) == 16 - 5  # 8 prompts x 2 orders, minus the 5 answered before the failure
    assert len(new) - len(verdicts) == 16  # both answers of 8 prompts scored once, after the judging finished
    # and the result is the one an uninterrupted run gives
    wins = sum(rank(f"policy answer number {i}") > rank(f"reference answer number {i}") for i in range(8))
    assert second.headline.wins == wins and second.headline.losses == 8 - wins


def test_unparseable_judge_counts_in_the_denominator(ollama_server, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl", n=4)
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), attempts=2, n_boot=200)
    pregenerate(cfg, n=4)
    ollama_server.reply = lambda m, f, o: "no verdict from me"
    res = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    head = res.headline
    assert head.n == 4 and head.ties == 4 and head.win_rate == 0.5
    assert head.diagnostics["unparsed"] == 4 and head.diagnostics["parse_rate"] == 0.0
    assert any("never parsed" in w for w in res.warnings)


def test_two_judges_report_each_and_their_kappa(ollama_server, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "heldout.jsonl")
    ollama_server.add_model("other:latest")
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), judges=["ollama:judge", "ollama:other"],
                      output_dir=str(tmp_path / "out"), n_boot=200)
    pregenerate(cfg)

    def two_tastes(messages, fmt, options):
        return hash_judge(messages, fmt, options)  # both judges share the taste: full agreement

    ollama_server.reply = two_tastes
    other = make_client("ollama:other", host=ollama_server.url)
    res = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server), "ollama:other": other})
    assert set(res.judges) == {"ollama:judge", "ollama:other"}
    assert res.kappa[0].agreement == 1.0 and res.kappa[0].n == 8
    models = {b["model"] for b in ollama_server.bodies("/api/chat")}
    assert models == {"judge", "other"}


def test_self_preference_families() -> None:
    assert self_preference_warnings(["ollama:llama3.1:8b"], ["ollama:llama3.1:70b"])
    assert "same family" in self_preference_warnings(["llama3.1:8b"], ["llama3.1:70b"])[0]
    assert "is the model" in self_preference_warnings(["local:smollm2"], ["SmolLM2-135M-Instruct"])[0]
    assert not self_preference_warnings(["ollama:qwen2.5:7b"], ["ollama:llama3.1:70b"])
    assert not self_preference_warnings(["ollama:llama3.1:70b"], [])


def test_cli_config_and_set(ollama_server, tmp_path: Path, monkeypatch) -> None:
    from loop.cli import main

    pairs = write_pairs(tmp_path / "heldout.jsonl", n=3)
    toml = tmp_path / "run.toml"
    toml.write_text(f'[judge]\npolicy = "/m/p"\nreference = "/m/r"\nprompts = "{pairs}"\n'
                    f'judges = ["ollama:judge"]\noutput_dir = "{tmp_path / "out"}"\n')
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(pairs), output_dir=str(tmp_path / "out"))
    pregenerate(cfg, n=3)
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    ollama_server.reply = hash_judge
    assert main(["judge", "--config", str(toml), "--set", "n_boot=100", "-q"]) == 0
    res = JudgeResults.read(tmp_path / "out" / "results.json")
    assert res.headline.n == 3 and res.n_boot == 100
    assert main(["judge", "--config", str(toml), "--set", "n_bot=1", "-q"]) == 2   # a typo is an error


def test_training_pairs_overlap_and_generator_are_reported(ollama_server, tmp_path: Path) -> None:
    heldout = write_pairs(tmp_path / "heldout.jsonl", n=4, generator="ollama:qwen2.5:7b")
    train = tmp_path / "train.jsonl"
    rows = [{"prompt": QUESTIONS[1], "chosen": "a", "rejected": "b", "meta": {"settings": {"model": "judge"}}},
            {"prompt": "Something else entirely.", "chosen": "a", "rejected": "b"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = JudgeConfig(policy="/m/p", reference="/m/r", prompts=str(heldout), judges=["ollama:judge"],
                      output_dir=str(tmp_path / "out"), pairs=str(train), n_boot=100)
    pregenerate(cfg, n=4)
    ollama_server.reply = hash_judge
    res = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
    assert any("1 of 4 evaluation prompts also appear in the training pairs" in w for w in res.warnings)
    assert any("generated the training pairs (judge)" in w for w in res.warnings)


def test_answers_come_the_way_the_model_is_used_and_the_report_says_which(ollama_server, tmp_path: Path,
                                                                         tiny_model_dir: Path) -> None:
    prompts = tmp_path / "heldout.json"
    prompts.write_text(json.dumps([{"instruction": q, "input": "", "output": "Known."} for q in QUESTIONS[:3]]))
    ollama_server.reply = hash_judge
    for fmt, want in (("auto", "chat"), ("alpaca", "alpaca")):
        cfg = JudgeConfig(policy=str(tiny_model_dir), reference=str(tiny_model_dir), prompts=str(prompts),
                          judges=["ollama:judge"], output_dir=str(tmp_path / fmt), max_tokens=6, n_boot=100,
                          prompt_format=fmt)
        res = evaluate(cfg, clients={"ollama:judge": fast_client(ollama_server)})
        rows = [json.loads(x) for x in (tmp_path / fmt / "gen-policy.jsonl").read_text().splitlines()]
        assert {r["format"] for r in rows} == {want} and res.answer_formats == {want: 3}
    report = (tmp_path / "auto" / "report.md").read_text()
    assert "Both models answered through the model's chat template (an Alpaca row as one user turn) (3)" in report
