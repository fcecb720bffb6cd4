"""A judge for the seed's own axis (politeness), fitted on the seed's training rows only: ``score(prompt, answer)``.

The embedded SmolLM2 judge validates at chance on the seed's pairs, so a win rate from it says nothing. This one
is a Bradley–Terry model of the pairs themselves: a linear score ``s(y) = w · φ(y)`` over cheap text features, fitted
so that ``σ(s(chosen) − s(rejected))`` is the probability the chosen answer is the better one (logistic regression on
feature differences, L2-penalised). It reads the answer only; the prompt is accepted for the judge interface
(``python:bench.judges.seed_axis:score``) and ignored.

Features ``φ``: the presence of each word and word-bigram (punctuation marks count as words, so "!" is one), and
three length features (log words, log characters, exclamation marks). ``LENGTH`` names them, so the accuracy can be
measured with them ablated: a judge that only rewards length would lose its accuracy there.

Data: rows ``[:935]`` of ``instruction-data-with-preference.json`` (the recipe's training rows), never the test rows
``[935:1045]``; the validation rows ``[1045:]`` only measure it (``python bench/judges/seed_axis.py``). The penalty
is chosen by 5-fold cross-validation on the training rows. Fitting is exact and deterministic (Newton's method on
the representer coefficients, ``w = Xᵀα``; no random start, no sampling) and takes about a minute on 2 cores (the
penalty search: 7 strengths × 5 folds). The weights go to ``$PREFLOOP_CACHE/judges/seed-axis-<key>.json``
(``~/.cache/prefloop``) the first time ``score`` is called, keyed by the training rows and the settings, and are
read from there after.

The seed pairs are found at ``$PREFLOOP_SEED_PAIRS``, else ``shared/seed-data/`` beside the checkout (or one folder
further up, for a worktree).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SEED_FILE = "instruction-data-with-preference.json"
TRAIN, TEST, VAL = slice(0, 935), slice(935, 1045), slice(1045, None)
PENALTIES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # L2 strengths, by CV on the training rows
FOLDS = 5
LENGTH = ("len:log_words", "len:log_chars", "len:exclaims")
VERSION = 1                              # bump when the features or the fit change: a new cache key
_TOKEN = re.compile(r"\w+|[^\w\s]")


def seed_pairs_path() -> Path:
    """Where the seed pairs are: ``$PREFLOOP_SEED_PAIRS``, else ``shared/seed-data`` beside (or above) the checkout."""
    if os.environ.get("PREFLOOP_SEED_PAIRS"):
        return Path(os.environ["PREFLOOP_SEED_PAIRS"])
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "seed-data" / SEED_FILE
        if path.exists():
            return path
    raise FileNotFoundError(f"the seed pairs ({SEED_FILE}) are not in shared/seed-data beside this checkout; set "
                            "PREFLOOP_SEED_PAIRS to the file")


def features(answer: str, *, length: bool = True) -> dict[str, float]:
    """``φ(answer)``: word and word-bigram presence (lower-cased, punctuation as words), and the length features."""
    tokens = _TOKEN.findall(answer.lower())
    out = {f"w:{t}": 1.0 for t in tokens}
    out.update({f"b:{a} {b}": 1.0 for a, b in zip(tokens, tokens[1:])})
    if length:
        out[LENGTH[0]] = math.log1p(sum(t[0].isalnum() or t[0] == "_" for t in tokens))
        out[LENGTH[1]] = math.log1p(len(answer))
        out[LENGTH[2]] = float(answer.count("!"))
    return out


def pairs_of(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(chosen, rejected) of the rows that carry a preference (identical sides carry none)."""
    return [(r["chosen"], r["rejected"]) for r in rows if r["chosen"].strip() != r["rejected"].strip()]


@dataclass
class Model:
    """The fitted weights (only the features seen in training) and how they were chosen."""

    weights: dict[str, float]
    penalty: float
    cv_accuracy: float
    length: bool

    def score(self, answer: str) -> float:
        return sum(self.weights.get(k, 0.0) * v for k, v in features(answer, length=self.length).items())


def _design(pairs: Sequence[tuple[str, str]], length: bool) -> tuple[np.ndarray, list[str]]:
    """Rows ``φ(chosen) − φ(rejected)`` over the features the pairs use (sorted: the same matrix every time)."""
    phis = [(features(c, length=length), features(r, length=length)) for c, r in pairs]
    names = sorted({k for fc, fr in phis for k in (*fc, *fr)})
    col = {k: i for i, k in enumerate(names)}
    x = np.zeros((len(pairs), len(names)))
    for i, (fc, fr) in enumerate(phis):
        for k, v in fc.items():
            x[i, col[k]] += v
        for k, v in fr.items():
            x[i, col[k]] -= v
    return x, names


def fit_weights(x: np.ndarray, penalty: float, iters: int = 50) -> np.ndarray:
    """``argmin_w Σᵢ log(1 + exp(−xᵢ·w)) + penalty/2 · n · |w|²`` (Bradley–Terry with every label "chosen wins").

    The minimiser lies in the rows' span, ``w = Xᵀα``; with ``K = XXᵀ`` (n × n, n = pairs) Newton's step on α is
    ``(D K + λI) Δ = λα − σ(−Kα)`` with ``D = diag(σ(m)σ(−m))``, λ = penalty · n: exact, deterministic, a few
    n × n solves."""
    n = x.shape[0]
    lam = penalty * n
    k = x @ x.T
    alpha = np.zeros(n)
    for _ in range(iters):
        m = k @ alpha
        p = 1.0 / (1.0 + np.exp(m))               # σ(−m)
        step = np.linalg.solve((p * (1 - p))[:, None] * k + lam * np.eye(n), lam * alpha - p)
        alpha -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return x.T @ alpha


def accuracy(model: Model, pairs: Sequence[tuple[str, str]]) -> float:
    """Share of pairs whose chosen answer scores strictly higher."""
    return sum(model.score(c) > model.score(r) for c, r in pairs) / len(pairs) if pairs else float("nan")


def fit(pairs: Sequence[tuple[str, str]], *, length: bool = True,
        penalties: Sequence[float] = PENALTIES, folds: int = FOLDS) -> Model:
    """The penalty with the best ``folds``-fold accuracy on ``pairs`` (fold = index mod folds; ties: the stronger
    penalty), then the weights refitted on all of them."""
    best: tuple[float, float] | None = None
    for pen in penalties:
        hits = 0
        for f in range(folds):
            train = [p for i, p in enumerate(pairs) if i % folds != f]
            held = [p for i, p in enumerate(pairs) if i % folds == f]
            x, names = _design(train, length)
            part = Model(dict(zip(names, fit_weights(x, pen))), pen, float("nan"), length)
            hits += sum(part.score(c) > part.score(r) for c, r in held)
        acc = hits / len(pairs)
        if best is None or acc >= best[0]:
            best = (acc, pen)
    assert best is not None
    x, names = _design(pairs, length)
    w = fit_weights(x, best[1])
    return Model({k: float(v) for k, v in zip(names, w) if v != 0.0}, best[1], best[0], length)


def _cache_path(rows: Sequence[dict], length: bool) -> Path:
    from prefloop.models import cache_dir

    blob = json.dumps([VERSION, PENALTIES, FOLDS, length, pairs_of(rows)], ensure_ascii=False)
    return cache_dir() / "judges" / f"seed-axis-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.json"


def load_or_fit(rows: Sequence[dict] | None = None, *, length: bool = True) -> Model:
    """The model fitted on ``rows`` (default: the seed's training rows [:935]), read from the cache when it has been
    fitted before."""
    if rows is None:
        rows = json.loads(seed_pairs_path().read_text())[TRAIN]
    path = _cache_path(rows, length)
    if path.exists():
        d = json.loads(path.read_text())
        return Model(d["weights"], d["penalty"], d["cv_accuracy"], d["length"])
    model = fit(pairs_of(rows), length=length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"weights": model.weights, "penalty": model.penalty, "cv_accuracy": model.cv_accuracy,
                               "length": model.length}, sort_keys=True))
    tmp.replace(path)
    return model


@lru_cache(maxsize=1)
def _default() -> Model:
    return load_or_fit()


def score(prompt: str, answer: str) -> float:
    """The seed-axis score of ``answer`` (higher: more like the seed's chosen answers). ``prompt`` is not read."""
    return _default().score(answer)


def length_adversarial(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose rejected answer is the longer one (in words): where a length-only judge must be wrong."""
    n = lambda s: len(re.findall(r"\w+", s))  # noqa: E731
    return [(c, r) for c, r in pairs if n(r) > n(c)]


def main() -> None:
    rows = json.loads(seed_pairs_path().read_text())
    train, val = pairs_of(rows[TRAIN]), pairs_of(rows[VAL])
    longer = lambda ps: sum(len(c.split()) > len(r.split()) for c, r in ps) / len(ps)  # noqa: E731
    print(f"seed-axis judge: Bradley–Terry on word/bigram presence + length, fitted on rows [:935] "
          f"({len(train)} pairs), measured on the validation rows [1045:] ({len(val)} pairs)")
    for length in (True, False):
        m = load_or_fit(rows[TRAIN], length=length)
        adv = length_adversarial(val)
        print(f"  {'with' if length else 'without'} length features: penalty {m.penalty:g} (5-fold CV accuracy on "
              f"train {m.cv_accuracy:.3f}); train {accuracy(m, train):.3f}; validation {accuracy(m, val):.3f} "
              f"({sum(m.score(c) > m.score(r) for c, r in val)}/{len(val)}); validation pairs whose rejected side is "
              f"longer: {accuracy(m, adv):.3f} (n = {len(adv)})")
    print(f"  baseline 'the longer answer wins': train {longer(train):.3f}, validation {longer(val):.3f}")
    m = load_or_fit(rows[TRAIN])
    top = sorted(m.weights.items(), key=lambda kv: kv[1])
    print("  most 'rejected' features:", ", ".join(f"{k} {v:+.2f}" for k, v in top[:10]))
    print("  most 'chosen' features:  ", ", ".join(f"{k} {v:+.2f}" for k, v in top[-10:][::-1]))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
