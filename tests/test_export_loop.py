"""The loop closed through Ollama, end to end against the test server: a tiny DPO run, ``[export]`` creates the
trained model and its reference on the server, the judge stage asks the server for both sides' answers; then the
exported model serves ``prefloop generate`` and ``prefloop judge`` like any Ollama model."""

from __future__ import annotations

import json
from pathlib import Path

from judge.results import JudgeResults
from loop.cli import main as prefloop
from loop.config import load_loop_config
from prefloop.jsonl import read_jsonl
from test_loop import PROMPTS, Args, scripted_reply, stage_fps, write_config


def test_train_export_then_judge_and_generate_through_the_server(tmp_path: Path, tiny_model_dir: Path,
                                                                 ollama_server, monkeypatch) -> None:
    from loop.run import main as run

    ollama_server.reply = scripted_reply
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    cfg_path = write_config(tmp_path, tiny_model_dir, extra="")
    cfg_path.write_text(cfg_path.read_text() + '\n[export]\nollama = "tiny-run"\nquantize = "q8_0"\n')
    cfg = load_loop_config(cfg_path)
    assert (cfg.judge.policy, cfg.judge.reference) == ("ollama:tiny-run", "ollama:tiny-run-reference")

    assert run(Args(cfg_path)) == 0
    run_dir = tmp_path / "run"
    for name in ("tiny-run:latest", "tiny-run-reference:latest"):
        assert ollama_server.models[name]["details"]["quantization_level"] == "Q8_0"
    assert (run_dir / "export" / "policy" / "Modelfile").exists()
    results = JudgeResults.read(run_dir / "judge" / "results.json")
    assert results.complete and results.headline.n == 4
    assert results.policy_answers.runtime == results.reference_answers.runtime == "ollama"
    assert results.policy_answers.model == "ollama:tiny-run"
    # both sides' held-out answers came from the server, the Alpaca rows as one chat turn (as the trainer rendered
    # them for a model with a chat template), so through /api/chat and its template
    assert results.policy_answers.prompt_format == results.reference_answers.prompt_format == "chat"
    answered = {b["model"] for b in ollama_server.bodies("/api/chat") + ollama_server.bodies("/api/generate")}
    assert {"tiny-run", "tiny-run-reference"} <= answered

    # a rerun skips every stage, the export included: nothing is uploaded or created again
    creates, fps = ollama_server.count("/api/create"), stage_fps(run_dir)
    assert run(Args(cfg_path)) == 0
    assert ollama_server.count("/api/create") == creates and stage_fps(run_dir) == fps

    # the exported model is an Ollama model like any other
    out = tmp_path / "pairs.jsonl"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS[:3]))
    assert prefloop(["generate", str(prompts), "-o", str(out), "--model", "ollama:tiny-run", "--quiet"]) == 0
    assert len(read_jsonl(out)) == 3
    assert prefloop(["judge", "--policy", "ollama:tiny-run", "--reference", "ollama:tiny-run-reference",
                     "--prompts", str(run_dir / "split" / "heldout_prompts.jsonl"), "--judge", "ollama:judge",
                     "--output", str(tmp_path / "judge"), "--n-boot", "100", "--max-tokens", "12", "--quiet"]) == 0
    assert JudgeResults.read(tmp_path / "judge" / "results.json").complete
