"""Skill retention measures on examples worked out by hand (the arithmetic is in each comment)."""

from __future__ import annotations

import pytest

from judge.results import AnswerRow
from judge.retention import (content_recall, content_words, lcs_length, lost_skill, opening, retention,
                             retention_warnings, rouge_l, side_skill, stock_opening)

KNOWN = "The capital of France is Paris."          # content words: capital, france, paris


def test_content_words_leave_out_function_words_and_contraction_pieces():
    assert content_words(KNOWN) == {"capital", "france", "paris"}
    assert content_words("I'd be happy to help!") == {"happy", "help"}   # i, d, be, to are function words
    assert content_words("5 kilograms is 5000 grams.") == {"5", "kilograms", "5000", "grams"}  # numbers count


def test_content_recall_is_the_share_of_the_known_good_content_found():
    # {happy, help, paris, capital} ∩ {capital, france, paris} = {paris, capital}: 2 of 3
    assert content_recall("I'd be happy to help! Paris is the capital.", KNOWN) == pytest.approx(2 / 3)
    assert content_recall("Paris.", KNOWN) == pytest.approx(1 / 3)
    assert content_recall("It is Paris, the capital of France.", KNOWN) == 1.0   # order and wording do not matter
    assert content_recall("I'm an AI designed to provide accurate information.", KNOWN) == 0.0
    assert content_recall("anything", "It is.") is None                        # nothing to recall


def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence():
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4                      # the textbook example
    # a = paris is the capital of france, k = the capital of france is paris: LCS "the capital of france" = 4,
    # P = 4/6, R = 4/6, F1 = 4/6
    assert rouge_l("Paris is the capital of France.", KNOWN) == pytest.approx(4 / 6)
    # a = paris (1 word): LCS 1, P = 1, R = 1/6, F1 = 2·(1/6)/(7/6) = 2/7
    assert rouge_l("Paris.", KNOWN) == pytest.approx(2 / 7)
    assert rouge_l("", KNOWN) == 0.0 and rouge_l(KNOWN, KNOWN) == 1.0


def test_stock_opening_is_the_commonest_four_word_opening_shared_by_several_answers():
    answers = ["I'd be happy to help! It is Paris.", "I'd be happy to assist. 5000 grams.", "Sure thing, Paris",
               "No."]
    assert opening(answers[0]) == "i d be happy" and opening("No.") is None
    assert stock_opening(answers) == ("i d be happy", 2)
    assert stock_opening(["One two three four.", "Five six seven eight."]) == (None, 0)   # no two alike


def rows() -> list[AnswerRow]:
    """Four held-out prompts; the policy opens with a stock phrase and drops content on two of them."""
    specs = [  # (known-good, reference answer, policy answer)
        (KNOWN, "The capital of France is Paris.", "I'd be happy to help! Paris is lovely."),   # 1 → 1/3
        ("Water boils at 100 degrees.", "Water boils at 100 degrees.", "I'd be happy to help you with that!"),  # 1 → 0
        ("The plural of mouse is mice.", "Mice.", "The plural of mouse is mice."),             # 1/3 → 1
        ("Jupiter is the largest planet.", "Jupiter.", "Jupiter."),                             # 1/3 → 1/3
    ]
    return [AnswerRow(id=f"p{i}", prompt=f"q{i}", reference_answer=r, policy_answer=p, known_good=k)
            for i, (k, r, p) in enumerate(specs)]


def test_retention_compares_both_models_prompt_by_prompt():
    ret = retention(rows(), n_boot=500, seed=0)
    # recalls, reference: 1, 1, 1/3, 1/3 (mean 2/3); policy: 1/3, 0, 1, 1/3 (mean 5/12)
    assert ret.reference.content_recall == pytest.approx(2 / 3)
    assert ret.policy.content_recall == pytest.approx(5 / 12)
    assert ret.kept == pytest.approx((5 / 12) / (2 / 3))            # 62.5 %
    assert (ret.better, ret.worse, ret.same) == (1, 2, 1)
    assert ret.policy.stock_opening == "i d be happy" and ret.policy.stock_share == 0.5
    assert ret.reference.stock_share == 0.0 and ret.n == ret.n_known_good == 4
    assert [p.id for p in ret.per_prompt] == ["p0", "p1", "p2", "p3"]
    low, high = ret.diff_ci
    assert low <= -0.25 <= high                                        # the mean difference is 5/12 − 2/3
    # one prompt gained as much as another lost: not clearly less, though the ratio is 62.5 %
    assert not ret.lost and high > 0


def test_lost_skill_needs_both_a_low_ratio_and_a_clear_per_prompt_loss():
    assert lost_skill(0.77, -0.05)
    assert not lost_skill(0.96, -0.01)            # kept 96 %: within the 95 % the tool accepts
    assert not lost_skill(0.80, 0.02)             # the interval reaches 0: a few prompts' noise
    assert not lost_skill(None, None)


def test_warnings_name_the_levers():
    ret = retention(rows(), n_boot=200)
    text = " ".join(retention_warnings(ret))
    assert "50% of the trained answers open with \"i d be happy …\"" in text and "rpo_alpha" in text
    lost = retention([AnswerRow(id=f"p{i}", prompt="q", known_good=KNOWN, reference_answer=KNOWN,
                                policy_answer="I'd be happy to help!") for i in range(6)], n_boot=200)
    assert lost.lost and lost.kept == 0.0
    assert any(w.startswith("the trained model kept less of the task") and "raise beta" in w
               for w in retention_warnings(lost))


def test_side_skill_counts_loops_empty_answers_and_length():
    s = side_skill(["", "I hope this helps. I hope this helps. I hope this helps.", "Paris."], [KNOWN, None, KNOWN])
    assert s.empty == 1 and s.loops == 1
    assert s.content_recall == pytest.approx((0 + 1 / 3) / 2)          # prompts with a known-good answer only
    assert s.mean_chars == pytest.approx((0 + 56 + 6) / 3)
