"""``python:MODULE:FUNCTION``: a judge you write in Python, for when the quality you want is something code can
check (a format, a marker, a length budget, a fitted scorer) and no judge model is worth serving.

Two kinds of function, told apart by a declared attribute, else by how many positional parameters they take:

- a **score** function, ``def score(prompt: str, answer: str) -> float``: higher is better; two answers are
  compared by their scores (equal scores are a tie). The rank strategy and the rounds' ``rank`` pairing use the
  score directly.
- a **pairwise** function, ``def better(prompt: str, a: str, b: str) -> "A" | "B" | "tie" | float``: which of
  two answers is better, or the probability that ``a`` is better.

Declare the kind when the signature cannot tell (``*args``, defaults): ``score.judge_kind = "score"`` or
``better.judge_kind = "pairwise"``. ``MODULE`` is imported as Python imports it; the current folder is searched
first, so ``my_judges.py`` beside the config works. The judge's identity in the cache is the spec plus a hash of
the module's source: editing the function asks it again, nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
import sys
from typing import Any, Callable

from judge.direct import Pick, by_probability, by_scores
from prefloop.llm.base import ClientSpec

KINDS = ("score", "pairwise")


def load_function(module: str, name: str) -> Callable[..., Any]:
    """Import ``module`` (the current folder first) and return its ``name``, or a ValueError saying what to fix."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module!r} ({exc}); put {module.replace('.', '/')}.py in the "
                         "current folder or install it") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"module {module!r} ({getattr(mod, '__file__', '?')}) has no function {name!r}")
    return fn


def kind_of(fn: Callable[..., Any]) -> str:
    """``score`` or ``pairwise``: the declared ``judge_kind``, else 2 or 3 positional parameters."""
    declared = getattr(fn, "judge_kind", None)
    if declared is not None:
        if declared not in KINDS:
            raise ValueError(f"{fn.__name__}.judge_kind = {declared!r}: write 'score' or 'pairwise'")
        return declared
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        params = None
    positional = None if params is None else [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                                               p.POSITIONAL_OR_KEYWORD)]
    n = None if positional is None or any(p.kind == p.VAR_POSITIONAL for p in params or ()) else len(positional)
    if n == 2:
        return "score"
    if n == 3:
        return "pairwise"
    raise ValueError(f"{fn.__name__}: a score function takes (prompt, answer) and a pairwise one (prompt, a, b); "
                     f"this one takes {n if n is not None else 'a variable number of'} arguments. Declare which "
                     f"with {fn.__name__}.judge_kind = 'score' or 'pairwise'")


def source_hash(fn: Callable[..., Any]) -> str:
    """A hash of the function's module source (its own source when the module has no file)."""
    try:
        text = inspect.getsource(sys.modules[fn.__module__])
    except (OSError, TypeError, KeyError):
        try:
            text = inspect.getsource(fn)
        except (OSError, TypeError):
            text = fn.__qualname__
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class PythonJudge:
    """A ``python:`` judge (see the module docstring); speaks ``judge.direct.DirectJudge``."""

    def __init__(self, spec: ClientSpec):
        self.written = str(spec)
        self.module, _, self.name = spec.model.rpartition(":")
        self._fn: Callable[..., Any] | None = None
        self.kind = ""
        self._identity = self.written

    @property
    def spec(self) -> str:
        """The name in cache keys: the spec and the source's hash (loads the function)."""
        self.function()
        return self._identity

    def check(self) -> None:
        self.function()

    def function(self) -> Callable[..., Any]:
        if self._fn is None:
            fn = load_function(self.module, self.name)
            self.kind = kind_of(fn)
            self._identity = f"{self.written}#{source_hash(fn)}"
            self._fn = fn
        return self._fn

    async def preflight(self) -> None:
        self.function()

    async def aclose(self) -> None:
        return None

    def score(self, prompt: str, answer: str) -> float | None:
        fn = self.function()
        if self.kind != "score":
            return None
        value = fn(prompt, answer)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.written} returned {value!r} for a score; return a finite number")
        return float(value)

    def pick(self, prompt: str, first: str, second: str) -> Pick:
        fn = self.function()
        if self.kind == "score":
            return by_scores(self.score(prompt, first), self.score(prompt, second), logodds=False)  # type: ignore[arg-type]
        value = fn(prompt, first, second)
        if isinstance(value, str) and value.strip().upper() in ("A", "B", "TIE"):
            word = value.strip().upper()
            return Pick("tie" if word == "TIE" else word)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return by_probability(float(value))
        raise ValueError(f"{self.written} returned {value!r}; a pairwise judge returns 'A', 'B', 'tie' or the "
                         "probability that A is better")
