"""Preflight: the SFT model's answers scored before training, and a warning with the numbers when it looks like it
cannot do the task (or when the judge cannot tell)."""

from __future__ import annotations

from judge.preflight import PreflightConfig, PreflightRow, preflight_verdict

PROMPT = "Below is an instruction. Write a response that completes the request.\n\n### Instruction:\nName a fruit."


def rows(*triples: tuple[str, float | None, float | None]) -> list[PreflightRow]:
    return [PreflightRow(id=str(i), prompt=PROMPT, answer=a, known_good="An apple.", score=s, known_good_score=k)
            for i, (a, s, k) in enumerate(triples)]


def test_preflight_warns_with_numbers_when_the_model_cannot_do_the_task():
    base_like = rows((PROMPT + " Name a fruit. Name a fruit.", 10.0, 90.0), ("", 0.0, 80.0))
    verdict = preflight_verdict(base_like, PreflightConfig(), "ollama:judge")
    assert verdict.mean_score == 5.0 and verdict.mean_known_good_score == 85.0
    assert verdict.empty == 1 and verdict.echo == 1
    (text,) = verdict.warnings
    assert "5/100" in text and "85/100" in text and "prefloop sft" in text and "does not teach" in text
    able = rows(("An apple.", 80.0, 85.0), ("An apple.", 80.0, 85.0))
    assert preflight_verdict(able, PreflightConfig(), "ollama:judge").warnings == []
    weak_judge = rows(("An apple.", 20.0, 25.0), ("An apple.", 20.0, 25.0))
    (text,) = preflight_verdict(weak_judge, PreflightConfig(), "local:smollm2").warnings
    assert text.startswith("preflight inconclusive") and "25/100" in text
    unscored = rows(("An apple.", None, None))
    assert "no usable score" in preflight_verdict(unscored, PreflightConfig(), "j").warnings[0]
