"""Win-rate statistics: pure functions over plain lists, so every number in a report can be checked by hand.

Conventions: the *policy* is the model being evaluated, the *reference* its starting point. A per-prompt outcome is
``"win"``, ``"tie"`` or ``"loss"`` from the policy's side, worth 1, ½ and 0. One prompt is one unit of evidence:
its two position-swapped games were already folded into one outcome (disagreeing orders make a tie), so resampling
prompts moves both orders together (a cluster bootstrap; resampling single games would understate the variance).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Hashable, Sequence

import numpy as np

OUTCOME_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class WinRate:
    """``rate`` = (wins + ½ ties) / n, with its percentile bootstrap interval."""

    rate: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    n: int

    def to_json(self) -> dict:
        return asdict(self)


def outcome_values(outcomes: Sequence[str]) -> np.ndarray:
    """``win``/``tie``/``loss`` -> 1/½/0; anything else is a bug upstream and raises."""
    try:
        return np.array([OUTCOME_VALUE[o] for o in outcomes], dtype=float)
    except KeyError as exc:
        raise ValueError(f"unknown outcome {exc.args[0]!r}; expected win, tie or loss") from None


def win_rate(outcomes: Sequence[str]) -> float:
    """(wins + ½ ties) / n; NaN for no outcomes (there is no honest number to give)."""
    if not outcomes:
        return math.nan
    return float(outcome_values(outcomes).mean())


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 groups: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    Without ``groups`` each value is one resampling unit. With ``groups`` (e.g. a prompt id per game) whole groups
    are drawn with replacement and the mean is taken over all rows of the drawn groups, so correlated rows move
    together. Seeded: the same inputs and seed give the same interval.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, x.size, size=(n_boot, x.size))
        means = x[idx].mean(axis=1)
    else:
        if len(groups) != x.size:
            raise ValueError(f"{len(groups)} groups for {x.size} values")
        keys = list(dict.fromkeys(groups))
        where = {k: i for i, k in enumerate(keys)}
        gi = np.array([where[g] for g in groups])
        sums = np.bincount(gi, weights=x, minlength=len(keys))
        counts = np.bincount(gi, minlength=len(keys)).astype(float)
        draw = rng.integers(0, len(keys), size=(n_boot, len(keys)))
        means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def sign_test(k: int, m: int) -> float:
    """One-sided sign test: the chance that a fair coin puts at least ``k`` of ``k + m`` pairs on one side."""
    n = k + m
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


def summarize(outcomes: Sequence[str], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> WinRate:
    """Win rate, interval and counts for per-prompt outcomes."""
    counts = Counter(outcomes)
    values = outcome_values(outcomes)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
    return WinRate(rate=win_rate(outcomes), ci_low=low, ci_high=high, wins=counts["win"], ties=counts["tie"],
                   losses=counts["loss"], n=len(outcomes))


# ------------------------------------------------------------------------------ length-controlled win rate

def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: np.ndarray | float = 0.0, iters: int = 100,
                 tol: float = 1e-10) -> np.ndarray:
    """Logistic regression with soft labels ``y`` in [0, 1] by Newton's method (IRLS).

    Minimises  -Σ [y log σ(Xθ) + (1-y) log(1-σ(Xθ))] + ½ Σ l2·θ²  — the same objective as AlpacaEval's trick of
    duplicating each row with labels 1 and 0 weighted y and 1-y. A small ``l2`` keeps θ finite when a feature
    separates the outcomes perfectly.
    """
    n, k = X.shape
    reg = np.broadcast_to(np.asarray(l2, dtype=float), (k,))
    theta = np.zeros(k)
    for _ in range(iters):
        p = _sigmoid(X @ theta)
        grad = X.T @ (p - y) + reg * theta
        w = p * (1 - p)
        hess = (X * w[:, None]).T @ X + np.diag(reg) + 1e-12 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < tol:
            break
    return theta


@dataclass(frozen=True)
class LengthControlled:
    """AlpacaEval's ``length_controlled_minimal`` fit: P(policy wins) = σ(skill + slope·tanh(Δlen / sd(Δlen)))."""

    rate: float
    skill: float
    slope: float
    warning: str | None = None


def lc_win_rate(values: Sequence[float], policy_lengths: Sequence[int], reference_lengths: Sequence[int], *,
                l2_slope: float = 1e-3) -> LengthControlled:
    """Length-controlled win rate: the raw win rate with the length difference regressed out.

    Features per prompt (AlpacaEval ``glm_winrate``): Δ = len(reference) - len(policy) in characters, z = Δ / sd(Δ)
    (ddof=1), x = [tanh(z), 1]; target y = the policy's outcome value. The prediction at Δ = 0 is the same for every
    prompt, σ(skill), which is the LC win rate. Equal lengths give back the raw win rate exactly; identical models
    give 50 %. Fitted on this held-out set only (the instruction-difficulty term needs AlpacaEval's 805 prompts).
    """
    y = np.asarray(values, dtype=float)
    if y.size == 0:
        return LengthControlled(rate=math.nan, skill=math.nan, slope=math.nan)
    raw = float(y.mean())
    if raw in (0.0, 1.0):  # nothing to separate: every prompt went one way
        return LengthControlled(rate=raw, skill=math.copysign(math.inf, raw - 0.5), slope=0.0)
    delta = np.asarray(reference_lengths, dtype=float) - np.asarray(policy_lengths, dtype=float)
    sd = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    z = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    X = np.column_stack([z, np.ones_like(z)])
    theta = fit_logistic(X, y, l2=np.array([l2_slope, 0.0]))
    rate = float(_sigmoid(theta[1]))
    warning = None
    bound_gap = (1.0 - raw) if rate > raw else raw
    if abs(rate - raw) > max(0.10, bound_gap / 4):  # AlpacaEval's "sign of failure of the GLM"
        warning = (f"length-controlled win rate {rate:.1%} is far from the raw {raw:.1%}: the length model may "
                   "not fit this set (few prompts, or lengths that decide everything)")
    return LengthControlled(rate=rate, skill=float(theta[1]), slope=float(theta[0]), warning=warning)


# ------------------------------------------------------------------------------------------- agreement

def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's κ = (p_o - p_e) / (1 - p_e) between two raters over the same items.

    p_o is the share of items they label alike, p_e the agreement expected by chance from each rater's label
    frequencies. When both raters always give one and the same label p_e = 1 and κ is defined here as 1.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"{len(labels_a)} labels against {len(labels_b)}")
    n = len(labels_a)
    if n == 0:
        return math.nan
    p_o = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e >= 1.0:
        return 1.0
    return (p_o - p_e) / (1.0 - p_e)


# ----------------------------------------------------------------------------------------- diagnostics

@dataclass(frozen=True)
class GameRecord:
    """One judge call seen by content: which answer was shown first and which the judge picked.

    ``first`` and ``pick`` name answers (``"A"`` = the first argument of ``judge_pair``, here the policy), not
    positions; ``pick`` is ``"tie"`` or ``None`` (unparseable after retries).
    """

    prompt_id: str
    first: str
    pick: str | None
    len_a: int
    len_b: int


def diagnostics(games: Sequence[GameRecord]) -> dict[str, float | int | None]:
    """How the judge behaves, independent of who won.

    - ``parse_rate``: games with a usable verdict / all games;
    - ``position_consistency``: prompts whose two orders agree / prompts with both orders parsed;
    - ``first_position_rate``: decisive games won by the answer shown first (0.5 = no position bias);
    - ``longer_pick_rate``: decisive games with unequal lengths won by the longer answer;
    - ``tie_rate``: parsed games the judge called a tie.
    Rates are ``None`` when nothing qualifies.
    """
    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    parsed = [g for g in games if g.pick is not None]
    decisive = [g for g in parsed if g.pick in ("A", "B")]
    unequal = [g for g in decisive if g.len_a != g.len_b]
    by_prompt: dict[str, list[GameRecord]] = {}
    for g in games:
        by_prompt.setdefault(g.prompt_id, []).append(g)
    both = [gs for gs in by_prompt.values() if len(gs) >= 2 and all(g.pick is not None for g in gs)]
    consistent = [gs for gs in both if len({g.pick for g in gs}) == 1]
    longer = [g for g in unequal if (g.pick == "A") == (g.len_a > g.len_b)]
    return {
        "games": len(games),
        "parsed": len(parsed),
        "parse_rate": ratio(len(parsed), len(games)),
        "position_consistency": ratio(len(consistent), len(both)),
        "first_position_rate": ratio(sum(g.pick == g.first for g in decisive), len(decisive)),
        "longer_pick_rate": ratio(len(longer), len(unequal)),
        "tie_rate": ratio(sum(g.pick == "tie" for g in parsed), len(parsed)),
    }


@dataclass(frozen=True)
class AgainstPerson:
    """A model judge's biases measured against a person's verdicts on the same prompts (see ``against_person``)."""

    n: int
    agree_first: float | None
    agree_second: float | None
    position_bias: float | None
    longer_judge: float | None
    longer_person: float | None
    length_bias: float | None


def against_person(person: dict[str, str], games: Sequence[GameRecord]) -> AgainstPerson:
    """How a judge departs from a person who decided the same prompts: calibrating a cheap judge on one's own taste.

    ``person`` maps a prompt id to the answer the person preferred (``"A"`` or ``"B"``, decided prompts only);
    ``games`` are the judge's calls (both orders) on those and other prompts.

    - ``agree_first``/``agree_second``: of the judge's decisive games on the person's prompts, the share that
      picked the person's answer when it was shown first, and when it was shown second;
      ``position_bias`` = first − second: above 0, the judge sides with the first position beyond the person's
      taste (0 for a judge whose agreement does not depend on the order);
    - ``longer_judge``: of those games on prompts whose answers differ in length, the share won by the longer
      answer; ``longer_person``: of those prompts, the share where the person preferred the longer answer;
      ``length_bias`` = judge − person: the judge's taste for length beyond the person's.
    Rates are ``None`` when nothing qualifies; ``n`` counts the person's prompts the judge decided at least once.
    """
    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    mine = [g for g in games if g.prompt_id in person and g.pick in ("A", "B")]
    first = [g for g in mine if g.first == person[g.prompt_id]]
    second = [g for g in mine if g.first != person[g.prompt_id]]
    a_first = ratio(sum(g.pick == person[g.prompt_id] for g in first), len(first))
    a_second = ratio(sum(g.pick == person[g.prompt_id] for g in second), len(second))
    unequal = [g for g in mine if g.len_a != g.len_b]
    longer = ratio(sum((g.pick == "A") == (g.len_a > g.len_b) for g in unequal), len(unequal))
    prompts = {g.prompt_id: g for g in unequal}
    person_longer = ratio(sum((person[p] == "A") == (g.len_a > g.len_b) for p, g in prompts.items()), len(prompts))
    return AgainstPerson(n=len({g.prompt_id for g in mine}), agree_first=a_first, agree_second=a_second,
                         position_bias=None if a_first is None or a_second is None else a_first - a_second,
                         longer_judge=longer, longer_person=person_longer,
                         length_bias=None if longer is None or person_longer is None else longer - person_longer)


def flip_rate(before: Sequence[str], after: Sequence[str]) -> float:
    """Share of items whose verdict changed between two runs (e.g. before and after an adversarial edit)."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} verdicts against {len(after)}")
    if not before:
        return math.nan
    return sum(a != b for a, b in zip(before, after)) / len(before)


# ------------------------------------------------------------------------------------- position debiasing

def position_and_content(l1: float, l2: float) -> tuple[float, float]:
    """Split a judge's log-odds over the two orders of one pair into a position term and a content term.

    L1 is the judge's log-odds that the answer shown first is the better one when the policy's answer is shown
    first, L2 the same log-odds when the policy's answer is shown second (log P(first) − log P(second) from its
    token probabilities). Read them as L1 = p + c and L2 = p − c, where p is the judge's pull toward whatever
    stands first and c its preference for the policy's content; then

        p = (L1 + L2) / 2      c = (L1 − L2) / 2

    A judge that only likes position one has c = 0 whatever it is shown; the sign of c is the debiased verdict.
    """
    return (l1 + l2) / 2.0, (l1 - l2) / 2.0
