"""bench/judges/seed_axis.py: the Bradley–Terry judge fitted on the seed's training rows. Checked on constructed
pairs (no seed data needed): the fit is the penalised optimum, it learns the axis a marker word carries, it is
deterministic, and the cache returns the same model."""

from __future__ import annotations

import numpy as np
import pytest

from bench.judges import seed_axis as sa

POLITE = ["please note that {x}", "happy to help: {x}", "{x}, thank you"]
RUDE = ["obviously {x}", "{x}, duh", "look, {x}"]
FACTS = ["the sky is blue", "paris is in france", "water boils at 100 degrees", "cats are mammals",
         "the sun is a star", "two plus two is four", "ice is frozen water", "bees make honey"]


def rows(facts):
    out = []
    for i, x in enumerate(facts):
        for j in range(3):
            if (i + j) % 2:
                out.append({"chosen": POLITE[j].format(x=x), "rejected": x})
            else:
                out.append({"chosen": x, "rejected": RUDE[j].format(x=x)})
    return out


def test_fit_is_the_penalised_optimum():
    x, _ = sa._design(sa.pairs_of(rows(FACTS)), True)
    pen = 0.05
    w = sa.fit_weights(x, pen)
    n = x.shape[0]
    grad = -x.T @ (1 / (1 + np.exp(x @ w))) + pen * n * w   # gradient of the objective in fit_weights' docstring
    assert np.max(np.abs(grad)) < 1e-6
    assert np.all(x @ w > 0)                                  # separable data: every pair ranked right


def test_learns_the_axis_and_generalises_to_new_facts():
    model = sa.fit(sa.pairs_of(rows(FACTS[:6])), penalties=(0.01, 0.1), folds=3)
    held = sa.pairs_of(rows(FACTS[6:]))
    assert sa.accuracy(model, held) == 1.0
    assert model.weights["w:obviously"] < 0 < model.weights["w:thank"]


def test_length_alone_does_not_decide():
    # polite rewrites are longer, rude ones longer too: "the longer wins" is at chance here
    pairs = sa.pairs_of(rows(FACTS))
    longer = sum(len(c.split()) > len(r.split()) for c, r in pairs) / len(pairs)
    assert 0.3 < longer < 0.7
    model = sa.fit(pairs, length=False, penalties=(0.1,), folds=2)
    assert not any(k in model.weights for k in sa.LENGTH)
    assert sa.accuracy(model, sa.length_adversarial(pairs)) == 1.0


def test_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFLOOP_CACHE", str(tmp_path))
    data = rows(FACTS)
    first = sa.load_or_fit(data)
    assert list((tmp_path / "judges").glob("seed-axis-*.json"))
    again = sa.load_or_fit(data)                              # read back from the cache
    refit = sa.fit(sa.pairs_of(data))                         # fitted again from scratch
    assert again.weights == first.weights
    assert refit.weights == pytest.approx(first.weights)
    assert again.score("obviously wrong") == first.score("obviously wrong")


def test_identical_sides_carry_no_preference():
    assert sa.pairs_of([{"chosen": "a ", "rejected": "a"}, {"chosen": "a", "rejected": "b"}]) == [("a", "b")]
