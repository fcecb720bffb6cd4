"""Win-rate statistics against worked examples computed by hand or by an independent route."""

from __future__ import annotations

import math

import numpy as np
import pytest

from judge.stats import (GameRecord, bootstrap_ci, cohen_kappa, diagnostics, fit_logistic, flip_rate, lc_win_rate,
                         outcome_values, summarize, win_rate)

# 20 prompts: 11 wins, 4 ties, 5 losses -> (11 + 2) / 20 = 0.65
TABLE = ["win"] * 11 + ["tie"] * 4 + ["loss"] * 5


def test_win_rate_by_hand() -> None:
    assert win_rate(TABLE) == pytest.approx(0.65)
    assert win_rate(["tie", "tie"]) == 0.5
    assert win_rate(["win", "loss"]) == 0.5
    assert math.isnan(win_rate([]))
    with pytest.raises(ValueError, match="unknown outcome"):
        win_rate(["win", "draw"])


def test_summary_counts_and_seeded_interval() -> None:
    s = summarize(TABLE, n_boot=4000, seed=7)
    assert (s.wins, s.ties, s.losses, s.n) == (11, 4, 5, 20)
    assert s.rate == pytest.approx(0.65)
    # the same seed gives the same interval; another seed a slightly different one
    again = summarize(TABLE, n_boot=4000, seed=7)
    assert (again.ci_low, again.ci_high) == (s.ci_low, s.ci_high)
    # independent route: the normal approximation mean ± 1.96·sd/√n (sd with ddof=0, as the bootstrap uses)
    x = outcome_values(TABLE)
    half = 1.96 * x.std() / math.sqrt(len(x))
    assert s.ci_low == pytest.approx(0.65 - half, abs=0.03)
    assert s.ci_high == pytest.approx(0.65 + half, abs=0.03)
    # percentile bootstrap of a mean of values on a ½ grid lands on multiples of 1/40
    assert (s.ci_low * 40) == pytest.approx(round(s.ci_low * 40))
    assert s.ci_low < 0.65 < s.ci_high


def test_bootstrap_matches_a_plain_loop_with_the_same_draws() -> None:
    x = outcome_values(TABLE)
    low, high = bootstrap_ci(x, n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(x), size=(500, len(x)))
    means = [float(np.mean([x[j] for j in row])) for row in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


def test_cluster_bootstrap_keeps_a_prompts_games_together() -> None:
    # each prompt contributes two perfectly correlated games: the clustered interval must equal the interval of
    # the per-prompt values, and be wider than a (wrong) per-game resampling
    per_prompt = outcome_values(TABLE)
    games = np.repeat(per_prompt, 2)
    groups = np.repeat(np.arange(len(per_prompt)), 2)
    clustered = bootstrap_ci(games, groups=list(groups), n_boot=4000, seed=1)
    naive = bootstrap_ci(games, n_boot=4000, seed=1)
    by_prompt = bootstrap_ci(per_prompt, n_boot=4000, seed=11)
    assert clustered[1] - clustered[0] == pytest.approx(by_prompt[1] - by_prompt[0], abs=0.03)
    assert (clustered[1] - clustered[0]) > (naive[1] - naive[0]) * 1.2


def test_all_ties_interval_is_a_point() -> None:
    s = summarize(["tie"] * 8, n_boot=200, seed=0)
    assert (s.rate, s.ci_low, s.ci_high) == (0.5, 0.5, 0.5)


def test_lc_equal_lengths_gives_raw() -> None:
    values = outcome_values(TABLE)
    lc = lc_win_rate(values, [40] * 20, [40] * 20)
    assert lc.rate == pytest.approx(0.65, abs=1e-9)
    assert lc.warning is None


def test_lc_removes_a_pure_length_effect() -> None:
    # no skill difference, only a judge that likes length: P(policy wins) = σ(-3·tanh(Δ/sd)), Δ = ref - policy.
    # The policy is made longer on most prompts, so its raw rate is inflated; LC must come back near 50 %.
    rng = np.random.default_rng(0)
    ref = rng.integers(20, 200, size=400)
    pol = ref + rng.integers(-60, 140, size=400)
    delta = ref - pol
    p = 1 / (1 + np.exp(3 * np.tanh(delta / delta.std(ddof=1))))
    y = (rng.random(400) < p).astype(float)
    lc = lc_win_rate(y, pol, ref)
    assert y.mean() > 0.6
    assert lc.rate == pytest.approx(0.5, abs=0.06)
    assert lc.slope == pytest.approx(-3, abs=0.8)


def test_lc_discounts_wins_bought_with_length() -> None:
    # policy longer on 3/4 of prompts and wins those; loses or ties the rest where it is shorter
    pol = [100] * 30 + [20] * 10
    ref = [20] * 30 + [100] * 10
    y = [1.0] * 27 + [0.5] * 3 + [0.0] * 8 + [0.5] * 2
    lc = lc_win_rate(y, pol, ref)
    raw = float(np.mean(y))
    assert lc.rate < raw


def test_fit_logistic_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=5000)
    X = np.column_stack([x, np.ones_like(x)])
    p = 1 / (1 + np.exp(-(1.5 * x - 0.5)))
    theta = fit_logistic(X, p)  # soft labels equal to the true probabilities: exact recovery
    assert theta == pytest.approx([1.5, -0.5], abs=1e-6)


def test_cohen_kappa_by_hand() -> None:
    # 10 items: agree on 7. Rater a: 5 win, 3 loss, 2 tie; rater b: 4 win, 4 loss, 2 tie
    a = ["win"] * 5 + ["loss"] * 3 + ["tie"] * 2
    b = ["win"] * 4 + ["loss"] + ["loss"] * 2 + ["tie"] + ["tie"] + ["loss"]
    # agreements: 4 (win) + 2 (loss at 6,7) + 1 (tie at 9) = 7 -> p_o = 0.7
    # p_e = (5·4 + 3·4 + 2·2) / 100 = 0.36 -> κ = (0.7 - 0.36) / 0.64 = 0.53125
    assert cohen_kappa(a, b) == pytest.approx(0.53125)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(["tie"] * 3, ["tie"] * 3) == 1.0
    assert cohen_kappa(["win", "loss"], ["loss", "win"]) == pytest.approx(-1.0)


def test_diagnostics_by_hand() -> None:
    games = [
        GameRecord("p1", first="A", pick="A", len_a=10, len_b=5),   # first pos, longer
        GameRecord("p1", first="B", pick="A", len_a=10, len_b=5),   # second pos, longer -> p1 consistent
        GameRecord("p2", first="A", pick="A", len_a=5, len_b=10),   # first pos, shorter
        GameRecord("p2", first="B", pick="B", len_a=5, len_b=10),   # first pos, longer  -> p2 inconsistent
        GameRecord("p3", first="A", pick="tie", len_a=5, len_b=5),
        GameRecord("p3", first="B", pick=None, len_a=5, len_b=5),   # unparseable
    ]
    d = diagnostics(games)
    assert d["parse_rate"] == pytest.approx(5 / 6)
    assert d["position_consistency"] == pytest.approx(1 / 2)
    assert d["first_position_rate"] == pytest.approx(3 / 4)
    assert d["longer_pick_rate"] == pytest.approx(3 / 4)
    assert d["tie_rate"] == pytest.approx(1 / 5)


def test_flip_rate() -> None:
    assert flip_rate(["win", "tie", "loss", "win"], ["win", "win", "loss", "loss"]) == 0.5
