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
    rows = json.loads(seed.read_text())[-4:]  # the end of the file: the recipe's held-out part
    prompts = tmp_path / "heldout.json"
    prompts.write_text(json.dumps(rows))
    cfg = JudgeConfig(policy="smollm2", reference="smollm2", prompts=str(prompts), judges=["local:smollm2"],
                      out_dir=str(tmp_path / "out"), max_new_tokens=32, judge_max_tokens=48, attempts=1,
                      concurrency=4, judge_identical=True, n_boot=1000)
    result = evaluate(cfg)
    r = result.results
    assert result.complete and r["n"] == 4
    # every prompt was sent to the judge in both orders (SmolLM2-135M rarely writes the verdict JSON: unparsed
    # judgments are ties and are reported, which is what keeps a useless judge from inventing a preference)
    assert r["diagnostics"]["games"] == 8
    assert r["diagnostics"]["unparsed"] == 0 or any("never parsed" in w for w in r["warnings"])
    assert r["ci_low"] <= 0.5 <= r["ci_high"]
    # the same model twice: the answers are the same, generated once
    answers = [json.loads(x) for x in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert all(a["policy_answer"] == a["reference_answer"] for a in answers)
    assert not (tmp_path / "out" / "gen-reference.jsonl").exists()
    assert any("models being compared" in w for w in r["warnings"])  # judge = the models it judges
    assert (tmp_path / "out" / "report.html").stat().st_size > 1000
