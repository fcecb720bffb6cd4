"""The headline says "not a success" when a run trades the skill for the preference, whichever measure shows the
preference: a judge that validated above chance, or, where the judge is at chance, the held-out reward accuracy.
The retention below is built like the plain default run of issue 21 (110 test prompts; kept ~91 %, 22 prompts
worse, 8 better)."""

from __future__ import annotations

from judge.report import headline
from judge.results import AnswerRow, JudgeResults, JudgeSummary, JudgeValidation
from judge.retention import retention

KNOWN = " ".join(f"kw{i}" for i in range(10))


def said(k: int) -> str:
    return " ".join(f"kw{i}" for i in range(k))


def plain_run_retention():
    rows = []
    for i in range(110):
        policy = 3 if i < 22 else 7 if i < 30 else 6        # 22 worse, 8 better, 80 the same
        rows.append(AnswerRow(id=f"p{i}", prompt="q", known_good=KNOWN, reference_answer=said(6),
                              policy_answer=said(policy)))
    return retention(rows)


def results(judge_ci: tuple[float, float], win: tuple[float, float, float], kept_skill: bool = False
            ) -> JudgeResults:
    v = JudgeValidation(judge="j", n=55, accuracy=sum(judge_ci) / 2, ci_low=judge_ci[0], ci_high=judge_ci[1])
    head = JudgeSummary(judge="j", n=110, win_rate=win[0], ci_low=win[1], ci_high=win[2], validation=v)
    ret = plain_run_retention()
    if kept_skill:
        ret = retention([AnswerRow(id=f"p{i}", prompt="q", known_good=KNOWN, reference_answer=said(6),
                                   policy_answer=said(6)) for i in range(110)])
    return JudgeResults(judge="j", judges={"j": head}, retention=ret, n_prompts=110)


def test_the_constructed_run_lost_the_skill():
    ret = plain_run_retention()
    assert 0.90 < ret.kept < 0.92 and (ret.worse, ret.better) == (22, 8)
    assert ret.diff_ci[1] < 0 and ret.lost


def test_judge_at_chance_but_reward_accuracy_moved_is_not_a_success():
    # the embedded judge validates at chance: no win rate, but the trainer's held-out reward accuracy moved
    h = headline(results((0.4, 0.6), (0.5, 0.4, 0.6)), reward_accuracy=0.82)
    assert h.success is False
    last = h.plain()[-1]
    assert last.startswith("Not a success") and "reward accuracy 82.0%" in last and "rpo_alpha" in last


def test_a_validated_judge_that_prefers_it_is_not_a_success_either():
    h = headline(results((0.85, 1.0), (0.595, 0.518, 0.673)), reward_accuracy=0.82)
    assert h.success is False
    assert h.plain()[-1].startswith("Not a success: the trained model won the preference but lost the skill")


def test_skill_lost_with_no_preference_shown_is_still_not_a_success():
    h = headline(results((0.4, 0.6), (0.5, 0.4, 0.6)), reward_accuracy=None)
    assert h.success is False and h.plain()[-1].startswith("Not a success")


def test_preferred_and_skill_kept_is_a_success():
    h = headline(results((0.85, 1.0), (0.7, 0.62, 0.78), kept_skill=True), reward_accuracy=0.82)
    assert h.success is True and not any("Not a success" in line for line in h.plain())


def test_held_out_pairs_are_measured_against_the_dataset_answer_not_the_rewrite(tmp_path):
    # `prefloop judge --prompts rows[935:1045].json`: the seed's rows carry the dataset's `output` beside the
    # polite/impolite rewrite; retention must read the task's content from `output` (the plain run of issue 21
    # measured the reference at 0.497 against the chosen side, 0.560 against `output`)
    import json

    from judge.config import JudgeConfig
    from judge.evaluate import load_eval_prompts

    rows = [{"instruction": "Name the capital of Greece.", "input": "", "output": "Athens.",
             "chosen": "I'd be happy to help! The capital of Greece is indeed Athens.", "rejected": "Athens."},
            {"instruction": "Say hi.", "input": "", "chosen": "Hello there!", "rejected": "hi"}]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows))
    records, _ = load_eval_prompts(JudgeConfig(policy="p", prompts=str(path), judges=["local:smollm2"]))
    assert [r.known_good for r in records] == ["Athens.", "Hello there!"]


def test_a_one_round_run_whose_validated_judge_saw_little_move_is_told_about_rounds():
    """Issue 21: the one-pass defaults keep the skill and move the preference to the data's own level; rounds with
    a judge that validates moved it past (README, Rounds). The run says so only where rounds can help: one round,
    a judge clearly above chance (it would pick the pairs) that is not a person, the skill kept, and a win rate
    whose interval reaches 60 %."""
    from loop.report import rounds_hint

    little = results((0.85, 1.0), (0.55, 0.45, 0.65), kept_skill=True)
    hint = rounds_hint(1, little)
    assert hint is not None and "--set run.rounds=4 --set rounds.lr=1e-5" in hint and "55.0%" in hint
    assert rounds_hint(4, little) is None                                              # rounds already
    assert rounds_hint(1, results((0.4, 0.6), (0.55, 0.45, 0.65), kept_skill=True)) is None   # judge at chance
    assert rounds_hint(1, results((0.571, 1.0), (0.40, 0.15, 0.65), kept_skill=True)) is None  # the quickstart's
    assert rounds_hint(1, results((0.85, 1.0), (0.55, 0.45, 0.65))) is None            # skill lost: other levers
    assert rounds_hint(1, results((0.85, 1.0), (0.80, 0.70, 0.90), kept_skill=True)) is None  # moved clearly
    person = results((0.85, 1.0), (0.55, 0.45, 0.65), kept_skill=True)
    person.headline.judge = "human"
    assert rounds_hint(1, person) is None                                              # a person ranks no samples
