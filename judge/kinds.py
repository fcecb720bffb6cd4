"""Which in-process judge a ``python:`` or ``reward:`` spec names (``judge.direct`` says what they share)."""

from __future__ import annotations

from judge.direct import DirectJudge
from prefloop.llm.base import ClientSpec, parse_spec


def is_direct(spec: str | ClientSpec) -> bool:
    return parse_spec(spec).kind in ("python", "reward")


def make_direct(spec: str | ClientSpec) -> DirectJudge:
    """The judge a ``python:`` or ``reward:`` spec names (loaded lazily: a reward model on first use)."""
    parsed = parse_spec(spec)
    if parsed.kind == "python":
        from judge.python_judge import PythonJudge

        return PythonJudge(parsed)
    if parsed.kind == "reward":
        from judge.reward import RewardJudge

        return RewardJudge(parsed)
    raise ValueError(f"{parsed} is not a python: or reward: judge")


def check_direct(spec: str | ClientSpec) -> None:
    """Before a run: the function imports and has a usable signature, the reward folder is a model (ValueError
    with what to fix otherwise). Nothing is called and no weights are loaded."""
    make_direct(spec).check()  # type: ignore[attr-defined]
