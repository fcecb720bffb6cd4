"""SmolLM2-135M-Instruct against itself, judged by itself: the interval must contain 50 % (slow: real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.config import JudgeConfig
from judge.evaluate import evaluate


@pytest.mark.slow
def test_smollm2_against_itself_contains_half(tmp_path: Path) -> None:
    seed = Path(__file__).resolve().parents[2] / "shared" / "seed-data" / "instruction-data.json"
    if not seed.exists():
        pytest.skip("../shared/seed-data is not beside this checkout")
    rows = json.loads(seed.read_text())[-8:]  # the end of the file: the recipe's held-out part
    prompts = tmp_path / "heldout.json"
    prompts.write_text(json.dumps(rows))
    # an A/A test: two independent samples of the same model (the reference side gets the next seed)
    cfg = JudgeConfig(policy="smollm2", reference="smollm2", prompts=str(prompts), judges=["local:smollm2"],
                      output_dir=str(tmp_path / "out"), max_tokens=40, temperature=0.8, n_boot=1000)
    result = evaluate(cfg)
    head = result.headline                      # the typed results (JudgeResults), not the old dict
    assert result.complete and head.n == 8
    assert head.ci_low <= 0.5 <= head.ci_high
    answers = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert sum(a["policy_answer"] != a["reference_answer"] for a in answers) >= 6
    # a local judge's verdict comes from token probabilities: every game parses, both orders were asked
    diag = head.diagnostics
    assert diag["games"] == 2 * (8 - diag["identical_answers"])
    assert diag["parse_rate"] == 1.0
    assert any("models being compared" in w for w in result.warnings)  # judge = the models it judges
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
