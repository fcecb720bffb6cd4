"""``prefloop judge`` with served models on either side: answers through the Ollama-protocol test server (text
prompts exactly as written, no chat template), the same settings on both sides recorded in results.json, two
sides answered differently refused before any answer is made, and failed answers resumed by a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.evaluate import evaluate
from judge.results import JudgeResults
from loop.cli import main as prefloop
from ollama_server import pairwise_answers
from prefloop.llm import make_client
from prefloop.llm.retry import RetryPolicy
from prefloop.templates import alpaca_prompt

QUESTIONS = ["Name the capital of France.", "Give a synonym for 'happy'.", "What is 7 times 6?",
             "Name a primary color.", "Spell 'necessary'.", "Name a planet."]


def write_prompts(path: Path, chat: bool = False) -> Path:
    rows = [{"id": f"q{i}", "prompt": [{"role": "user", "content": q}] if chat else alpaca_prompt(q),
             "known_good": f"Known answer {i}."} for i, q in enumerate(QUESTIONS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def scripted(messages, fmt, options):
    """Answers say which model was asked (through the prompt's seed-free text); the judge prefers the shorter."""
    if isinstance(fmt, dict):
        a, b = pairwise_answers(messages)
        return json.dumps({"reason": "shorter", "winner": "A" if len(a) < len(b) else "B" if len(b) < len(a)
                           else "tie"})
    return "A short answer." if "France" in messages[-1]["content"] else "A somewhat longer answer to this one."


@pytest.fixture
def server(ollama_server):
    ollama_server.reply = scripted
    for name in ("policy-m", "reference-m"):
        ollama_server.add_model(name, quantization="Q8_0")
    return ollama_server


def config(server, tmp_path: Path, prompts: Path, **kw) -> JudgeConfig:
    base = dict(policy=f"ollama:policy-m@{server.url}", reference=f"ollama:reference-m@{server.url}",
                prompts=str(prompts), judges=["ollama:judge"], output_dir=str(tmp_path / "out"), max_tokens=24,
                n_boot=100, attempts=1)
    base.update(kw)
    return JudgeConfig(**base)


def judge_client(server):
    return {"ollama:judge": make_client("ollama:judge", host=server.url, retry=RetryPolicy(attempts=1))}


def test_both_sides_answered_by_the_server_with_the_same_settings(server, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "heldout.jsonl")
    cfg = config(server, tmp_path, prompts)
    result = evaluate(cfg, clients=judge_client(server))
    assert result.complete and result.headline.n == len(QUESTIONS)
    generated = server.bodies("/api/generate")
    assert len(generated) == 2 * len(QUESTIONS)
    assert all(b["raw"] is True and b["options"]["num_predict"] == 24 and b["options"]["temperature"] == 0
               for b in generated)
    assert {b["prompt"] for b in generated} == {alpaca_prompt(q) for q in QUESTIONS}  # exactly as trained
    saved = JudgeResults.read(tmp_path / "out" / "results.json")
    pol, ref = saved.policy_answers, saved.reference_answers
    assert (pol.runtime, pol.prompt_format, pol.quantization) == ("ollama", "text", "Q8_0")
    assert pol.model == "ollama:policy-m" and ref.model == "ollama:reference-m"
    assert pol.mismatch(ref) == "" and pol.digest == server.models["policy-m:latest"]["digest"]

    again = evaluate(cfg, clients=judge_client(server))  # a rerun asks the server for no answer again
    assert len(server.bodies("/api/generate")) == len(generated) and again.headline.n == result.headline.n


def test_a_model_created_again_under_its_name_is_answered_again(server, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "heldout.jsonl")
    cfg = config(server, tmp_path, prompts)
    evaluate(cfg, clients=judge_client(server))
    server.add_model("policy-m", quantization="Q4_K_M")  # re-exported: another digest behind the same name
    evaluate(cfg, clients=judge_client(server))
    assert len(server.bodies("/api/generate")) == 3 * len(QUESTIONS)


def test_sides_with_different_chat_templates_are_refused_before_any_answer(server, tmp_path: Path,
                                                                           tiny_model_dir: Path, capsys) -> None:
    prompts = write_prompts(tmp_path / "heldout.jsonl", chat=True)
    code = prefloop(["judge", "--policy", f"ollama:policy-m@{server.url}", "--reference", str(tiny_model_dir),
                     "--prompts", str(prompts), "--judge", f"ollama:judge@{server.url}", "--output",
                     str(tmp_path / "out"), "--quiet"])   # a reachable judge: it is checked before any answer too
    err = capsys.readouterr().err
    assert code == 2 and "answered differently (template" in err and "Traceback" not in err
    assert server.count("/api/generate") == server.count("/api/chat") == 0
    assert not (tmp_path / "out" / "gen-policy.jsonl").exists()


def test_an_openai_compatible_policy_answers_text_prompts_as_written(server, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "heldout.jsonl")
    cfg = config(server, tmp_path, prompts, policy=f"openai:policy-m:latest@{server.url}/v1")
    result = evaluate(cfg, clients=judge_client(server))
    completions = server.bodies("/v1/completions")
    assert result.complete and {b["prompt"] for b in completions} == {alpaca_prompt(q) for q in QUESTIONS}
    assert any("answered by openai-compatible" in w and "by ollama" in w for w in result.warnings)


def test_failed_answers_stop_the_judge_and_a_rerun_makes_only_those(server, tmp_path: Path, capsys) -> None:
    prompts = write_prompts(tmp_path / "heldout.jsonl")
    server.fail("status", endpoint="/api/generate", status=400, times=2, message="bad request")
    args = ["judge", "--policy", f"ollama:policy-m@{server.url}", "--reference", f"ollama:reference-m@{server.url}",
            "--prompts", str(prompts), "--judge", f"ollama:judge@{server.url}", "--output", str(tmp_path / "out"),
            "--n-boot", "100", "--quiet"]
    assert prefloop(args) == 1
    assert "answers failed" in capsys.readouterr().err and server.count("/api/chat") == 0  # nothing judged
    before = server.count("/api/generate")
    assert prefloop(args) == 0
    assert server.count("/api/generate") - before == 2 + len(QUESTIONS)  # the 2 failed, then the reference side
