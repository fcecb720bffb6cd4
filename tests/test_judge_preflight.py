"""Preflight: the SFT model's answers scored before training, and a warning with the numbers when it looks like it
cannot do the task; the judge is first measured on the dataset's own answers against deliberately wrong ones, and
when it cannot tell them apart the check says so, with advice that fits the judge in use."""

from __future__ import annotations

from judge.preflight import PreflightConfig, PreflightRow, broken_answer, judge_accuracy, preflight_verdict

PROMPT = "Below is an instruction. Write a response that completes the request.\n\n### Instruction:\nName a fruit."


def rows(*cases: tuple[str, float | None, float | None, float | None]) -> list[PreflightRow]:
    """(SFT answer, its score, the dataset answer's score, the wrong answer's score) per prompt."""
    return [PreflightRow(id=str(i), prompt=PROMPT, answer=a, known_good="An apple.", score=s, known_good_score=k,
                         broken="A carrot.", broken_score=b) for i, (a, s, k, b) in enumerate(cases)]


def test_preflight_warns_with_numbers_when_the_model_cannot_do_the_task():
    base_like = rows((PROMPT + " Name a fruit. Name a fruit.", 10.0, 90.0, 5.0), ("", 0.0, 80.0, 10.0))
    verdict = preflight_verdict(base_like, PreflightConfig(), "ollama:judge")
    assert verdict.mean_score == 5.0 and verdict.mean_known_good_score == 85.0 and verdict.judge_accuracy == 1.0
    assert verdict.empty == 1 and verdict.echo == 1
    (text,) = verdict.warnings
    assert "5/100" in text and "85/100" in text and "prefloop sft" in text and "does not teach" in text
    able = rows(("An apple.", 80.0, 85.0, 10.0), ("An apple.", 80.0, 85.0, 10.0))
    assert preflight_verdict(able, PreflightConfig(), "ollama:judge").warnings == []
    unscored = [PreflightRow(id="0", prompt=PROMPT, answer="An apple.", known_good="An apple.", score=None,
                             known_good_score=None)]
    assert "no usable score" in preflight_verdict(unscored, PreflightConfig(), "j").warnings[0]


def test_a_judge_that_cannot_tell_right_from_wrong_makes_the_check_inconclusive():
    # it scores the wrong answer as high as the dataset's own on one prompt and higher on the other: 25 %
    blind = rows(("An apple.", 20.0, 25.0, 25.0), ("An apple.", 20.0, 25.0, 60.0))
    assert judge_accuracy(blind) == 0.25
    (text,) = preflight_verdict(blind, PreflightConfig(), "local:smollm2").warnings
    assert text.startswith("preflight inconclusive") and "25%" in text and "25/100" in text
    assert 'judge = "ollama:llama3.1:8b"' in text


def test_advice_never_names_the_judge_in_use():
    blind = rows(("An apple.", 50.0, 50.0, 70.0), ("An apple.", 50.0, 50.0, 70.0))
    (text,) = preflight_verdict(blind, PreflightConfig(), "ollama:llama3.1:8b").warnings
    assert 'judge = "ollama:llama3.1:70b"' in text
    assert text.count("llama3.1:8b") == 1               # only where it names the judge that was measured
    (text,) = preflight_verdict(blind, PreflightConfig(), "ollama:llama3.1:70b").warnings
    assert "already the largest judge suggested here" in text


def test_a_judge_that_ranks_right_but_scores_low_keeps_the_relative_check_only():
    # the dataset's answers get only 30/100, but always more than the wrong ones: the ranking is usable, the
    # absolute threshold is not, so a model at 25/100 (83 % of the dataset's) draws no warning
    strict = rows(("An apple.", 25.0, 30.0, 5.0), ("An apple.", 25.0, 30.0, 5.0))
    assert preflight_verdict(strict, PreflightConfig(), "ollama:judge").warnings == []
    worse = rows(("Paris.", 5.0, 30.0, 5.0), ("Paris.", 5.0, 30.0, 5.0))
    (text,) = preflight_verdict(worse, PreflightConfig(), "ollama:judge").warnings
    assert "under 60% of the 30/100" in text


def test_the_broken_answer_is_another_prompts_answer():
    answers = ["An apple.", "Paris.", None, "Paris."]
    assert broken_answer(answers, 0) == "Paris."
    assert broken_answer(answers, 1) == "An apple."     # the next one that differs from its own
    assert broken_answer(answers, 2) is None             # no known-good answer: nothing to break
    assert broken_answer(["Red is a color.", "Red is a color."], 0) == "color. a is Red"
