"""``prefloop generate`` through the in-process ``local:`` backend: the tiny test model (fast) and the real
SmolLM2-135M-Instruct on the seed's instructions (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loop.cli import main as cli_main
from prefloop.sources import load_preferences

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "data" / "prompts" / "quickstart.json"
SEED_INSTRUCTIONS = ROOT.parent / "shared" / "seed-data" / "instruction-data.json"


def test_cli_rewrite_with_the_local_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    args = ["generate", str(QUICKSTART), "-o", str(out), "--model", f"local:{tiny_model_dir}", "--limit", "3",
            "--max-tokens", "8", "--quiet"]
    assert cli_main(args) == 0
    summary = json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())
    pairs, _ = load_preferences(out)
    assert summary["written"] == len(pairs) and summary["written"] + sum(summary["run"]["dropped"].values()) == 3
    for p in pairs:
        assert p.meta["output"] in (p.chosen, p.rejected) and p.chosen != p.rejected
        assert p.meta["model"] == f"local:{tiny_model_dir}"
    assert cli_main(args) == 0  # a rerun resumes: nothing new
    assert json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())["skipped_existing"] == 3


def test_contrast_rejected_side_is_the_local_models_own_answer(ollama_server: Any, tiny_model_dir: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from prefloop.llm import make_client
    from prefloop.llm.base import GenOptions
    from prefloop.sources import load_prompts

    ollama_server.reply = lambda messages, fmt, options: "A careful, correct answer."
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    out = tmp_path / "pairs.jsonl"
    sft = f"local:{tiny_model_dir}"
    args = ["generate", str(QUICKSTART), "-o", str(out), "--strategy", "contrast", "--model", "llama3.1:70b",
            "--sft-model", sft, "--limit", "2", "--max-tokens", "6", "--quiet"]
    assert cli_main(args) == 0
    pairs, _ = load_preferences(out)
    assert len(pairs) == 2
    prompts, _ = load_prompts(QUICKSTART)
    local = make_client(sft)
    from prefloop.templates import prompt_for

    own = local.generate_batch([prompt_for(p, "auto", True)[0] for p in prompts[:2]],
                               GenOptions(max_tokens=6, temperature=0.0))
    by_prompt = {p.prompt: p for p in pairs}
    for rec, text in zip(prompts[:2], own):
        pair = by_prompt[rec.prompt]
        assert pair.chosen == "A careful, correct answer."
        assert pair.rejected == text.strip()  # greedy, as trained (a chat turn): what the SFT model says itself
        assert pair.meta["rejected_model"] == sft


@pytest.mark.slow
def test_smollm2_rewrites_seed_instructions(tmp_path: Path) -> None:
    if not SEED_INSTRUCTIONS.exists():
        pytest.skip("seed data not beside the checkout")
    out = tmp_path / "pairs.jsonl"
    assert cli_main(["generate", str(SEED_INSTRUCTIONS), "-o", str(out), "--model", "local:smollm2", "--limit", "3",
                     "--max-tokens", "32", "--quiet"]) == 0
    summary = json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())
    pairs, _ = load_preferences(out)
    assert summary["written"] == len(pairs) >= 1
    assert summary["written"] + sum(summary["run"]["dropped"].values()) == 3
    for p in pairs:
        assert p.meta["output"] in (p.chosen, p.rejected) and p.chosen.strip() != p.rejected.strip()
