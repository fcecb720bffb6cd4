"""Judges that need no server and no reply to parse: a Python function you write (``python:MODULE:FUNCTION``,
``judge.python_judge``) or a reward model (``reward:PATH``, ``judge.reward``).

Each is called with the task and the answers themselves, not with a rendered judge prompt, and says directly
which answer is better. Everything around the call is the same as for a model judge: both orders are asked (a
function that looks at position shows up as inconsistent ties), verdicts are cached per judgment under a key that
holds the judge's own identity (its code's or weights' hash, so editing the judge asks again), and the rows go
through the same validation on known pairs, statistics and report.

A direct judge is an object with ``spec`` (its name in cache keys), ``preflight``/``aclose`` like a client, and

- ``pick(prompt, first, second) -> Pick``: which of two answers is better, by position;
- ``score(prompt, answer) -> float | None``: a score of one answer, higher is better (None: the judge only
  compares pairs).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Protocol

from judge.cache import JudgeCache, judgment_key


@dataclass(frozen=True)
class Pick:
    """A verdict by position: ``winner`` is ``"A"`` (the first answer), ``"B"`` or ``"tie"``; ``logodds`` is
    log P(first better) − log P(second better) when the judge gives one (a probability, a reward margin)."""

    winner: str
    reason: str = ""
    logodds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"winner": self.winner, "reason": self.reason}
        if self.logodds is not None:
            out["logodds"] = self.logodds
        return out


class DirectJudge(Protocol):
    spec: str

    async def preflight(self) -> None: ...

    async def aclose(self) -> None: ...

    def pick(self, prompt: str, first: str, second: str) -> Pick: ...

    def score(self, prompt: str, answer: str) -> float | None: ...


def by_scores(first: float, second: float, *, logodds: bool) -> Pick:
    """A pairwise verdict from two scores: the higher wins, equal is a tie. For a reward model the margin is the
    Bradley-Terry log-odds; a function's scores are on its own scale, so no log-odds is claimed for them."""
    winner = "A" if first > second else "B" if second > first else "tie"
    return Pick(winner, f"scores {first:.4g} vs {second:.4g}", first - second if logodds else None)


def by_probability(p: float) -> Pick:
    """A verdict from P(first better): above one half the first wins, below the second, exactly one half a tie."""
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"a pairwise judge's probability must be in [0, 1], got {p}")
    winner = "A" if p > 0.5 else "B" if p < 0.5 else "tie"
    clipped = min(max(p, 1e-9), 1 - 1e-9)
    return Pick(winner, f"P(first better) = {p:.3f}", math.log(clipped / (1 - clipped)))


async def ask_direct(judge: DirectJudge, prompt: str, first: str, second: str, *, cache: JudgeCache | None,
                     template_hash: str, options: dict[str, Any]) -> dict[str, Any]:
    """One order's verdict by position (``judge.pairwise.parse_verdict``'s shape), from the cache when asked
    before. The judge runs in a worker thread so the event loop keeps serving other jobs."""
    key = judgment_key(judge=judge.spec, template_hash=template_hash, mode="pairwise", prompt=prompt,
                       answers=(first, second), known_good=None, options=options)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return {**hit["value"], "cached": True}
    value = (await asyncio.to_thread(judge.pick, prompt, first, second)).to_json()
    if cache is not None:
        cache.put(key, {"value": value, "raw": ""})
    return value


async def score_direct(judge: DirectJudge, prompt: str, answer: str, *, cache: JudgeCache | None) -> float | None:
    """One answer's score (None when the judge only compares pairs), cached per judgment."""
    key = judgment_key(judge=judge.spec, template_hash="direct", mode="score", prompt=prompt, answers=(answer,),
                       known_good=None, options={})
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit["value"]
    value = await asyncio.to_thread(judge.score, prompt, answer)
    if cache is not None and value is not None:
        cache.put(key, {"value": value, "raw": ""})
    return value
