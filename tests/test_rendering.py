"""One prompt-rendering rule (issue 17, house review 3 §5): the preflight and the generator's on-policy answers
show the SFT model an Alpaca row as the trainer and the judge do (one chat turn for a model with a chat
template), not as the raw Alpaca text they sent before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from prefloop.llm.base import GenOptions
from prefloop.records import PromptRecord
from prefloop.templates import alpaca_prompt, prompt_for

ROWS = [("Name a primary color.", ""), ("Add the numbers.", "2 and 3"), ("Say hello politely.", "")]


def alpaca_records() -> list[PromptRecord]:
    return [PromptRecord(id=f"r{i}", prompt=alpaca_prompt(ins, inp), known_good=f"Answer {i}.",
                         meta={"prompt_format": "alpaca", "instruction": ins, "input": inp})
            for i, (ins, inp) in enumerate(ROWS)]


def both_renderings(model_dir: Path, records: list[PromptRecord], max_tokens: int) -> tuple[list[str], list[str]]:
    from prefloop.llm import make_client

    client = make_client(f"local:{model_dir}")
    options = GenOptions(temperature=0.0, max_tokens=max_tokens)
    chat = client.generate_batch([prompt_for(r, "auto", True)[0] for r in records], options)
    raw = client.generate_batch([r.prompt for r in records], options)
    assert chat != raw, "the tiny model must answer the two renderings differently for this test to mean anything"
    return chat, raw


def test_prompt_for_turns_an_alpaca_row_into_one_chat_turn_for_a_templated_model() -> None:
    rec = alpaca_records()[1]
    assert prompt_for(rec, "auto", True) == ([{"role": "user", "content": "Add the numbers.\n\n2 and 3"}], "chat")
    assert prompt_for(rec, "auto", False) == (rec.prompt, "alpaca")


def test_preflight_answers_as_the_model_is_trained(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    from judge.config import JudgeConfig
    from judge.preflight import PreflightConfig, run_preflight

    (tmp_path / "flat_judge.py").write_text("def score(prompt, answer):\n    return 50.0\n")
    monkeypatch.chdir(tmp_path)
    records = alpaca_records()
    chat, raw = both_renderings(tiny_model_dir, records, 10)
    cfg = JudgeConfig(output_dir=str(tmp_path / "j"), cache=str(tmp_path / "cache.sqlite"))
    run_preflight(PreflightConfig(prompts=3, max_tokens=10), cfg, str(tiny_model_dir), records,
                  "python:flat_judge:score", tmp_path / "pre")
    got = [json.loads(x)["answer"] for x in (tmp_path / "pre" / "answers.jsonl").read_text().splitlines()]
    sys.modules.pop("flat_judge", None)
    assert got == chat


def test_contrast_rejected_answers_are_on_policy(tmp_path: Path, tiny_model_dir: Path, ollama_server) -> None:
    from generator.config import GenerateConfig
    from generator.run import generate

    ollama_server.reply = lambda messages, fmt, options: "A careful answer."
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": i, "input": x, "output": "ok"} for i, x in ROWS]))
    cfg = GenerateConfig(strategy="contrast", model=f"ollama:llama3.2:1b@{ollama_server.url}",
                         sft_model=f"local:{tiny_model_dir}", source=str(prompts), output=str(tmp_path / "p.jsonl"),
                         max_tokens=10, temperature=0.0)
    result = generate(cfg)
    assert result.complete
    from prefloop.sources import load_prompts

    records, _ = load_prompts(prompts)
    chat, raw = both_renderings(tiny_model_dir, records, 10)
    pairs = {json.loads(x)["meta"]["source_id"]: json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()}
    assert [pairs[r.id]["rejected"] for r in records] == [a.strip() for a in chat]
