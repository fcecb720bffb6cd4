"""Score mode: one answer, 0–100, with the seed recipe's prompt.

The reference recipe (LLMs-from-scratch ch07) asks "score the model response ... on a scale from 0 to 100 ...
Respond with the integer number only" and takes ``int()`` of whatever digits come back. Here the judge is asked
for ``{"score": n}`` under a JSON schema (Ollama constrains its output to it; local judges are shown the shape),
and only that reply, or a bare number, counts: a number inside prose is not trusted (see ``parse_score``). The
value is clamped to [0, 100] (llama.cpp grammars do not enforce the bounds). A reply without a score is asked
again a bounded number of times; after that ``Score.value`` is None and ``Score.raw`` keeps the reply, so the
caller counts it instead of losing it.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from judge.cache import JudgeCache, judgment_key
from judge.core import DEFAULT_OPTIONS, ask_parsed, judge_name, options_key
from judge.prompts import JudgeTemplate, check_fields, judge_prompt_text, load_template
from prefloop.llm.base import GenOptions
from prefloop.records import Prompt

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["score"],
}


@dataclass
class Score:
    """A judge's 0–100 score (None if no reply parsed), the raw reply, and how it was obtained."""

    value: float | None
    raw: str = ""
    attempts: int = 0
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def clamp(value: float) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return min(100.0, max(0.0, value))


def parse_score(data: Any, text: str) -> float | None:
    """A 0–100 score from the reply asked for: the schema'd ``{"score": n}``, or a reply that is a number and
    nothing else (the seed recipe's "integer number only"). A number inside prose is not a score: a judge that
    echoes the prompt ("... a scale from 0 to 100 ...") or argues its way to a figure has not given one, and the
    seed recipe's ``int()`` of any digit it found is how an echoing judge wrote pairs scored 100/61/39."""
    if isinstance(data, dict):
        value = data.get("score")
    else:
        try:
            value = json.loads((text or "").strip())
        except json.JSONDecodeError:
            return None
        if isinstance(value, dict):
            value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return clamp(float(value))


async def score_answer(client: Any, prompt: Prompt, answer: str, *, known_good: str | None = None,
                       cache: JudgeCache | None = None, template: JudgeTemplate | str | None = None,
                       options: GenOptions | None = None, attempts: int = 3) -> Score:
    """Score ``answer`` to ``prompt`` from 0 to 100 (the seed recipe's prompt; ``known_good`` = correct output).

    An empty answer scores 0 without a call (as the recipe's ``ollama_evaluate.py`` does). Transport errors
    propagate; unparseable replies come back as ``Score(value=None, raw=...)`` after ``attempts`` calls.
    """
    if not answer.strip():
        return Score(value=0.0, raw="", attempts=0, cached=False)
    tpl = template if isinstance(template, JudgeTemplate) else load_template(template or "score")
    check_fields(tpl, ("prompt", "answer"))
    text = judge_prompt_text(prompt)
    if hasattr(client, "pick"):  # a python: or reward: judge scores on its own scale (judge.direct)
        from judge.direct import score_direct

        return Score(value=await score_direct(client, text, answer, cache=cache), attempts=1)
    opts = options or DEFAULT_OPTIONS
    messages = tpl.render(prompt=text, answer=answer, known_good=known_good)
    key = judgment_key(judge=judge_name(client), template_hash=tpl.hash, mode="score", prompt=text,
                       answers=(answer,), known_good=known_good, options=options_key(opts))
    got = await ask_parsed(client, messages, parse=parse_score, schema=SCORE_SCHEMA, options=opts,
                           attempts=attempts, cache=cache, key=key)
    return Score(value=got.value, raw=got.raw, attempts=got.attempts, cached=got.cached)


async def score_many(client: Any, items: list[tuple[Prompt, str, str | None]], *, cache: JudgeCache | None = None,
                     **kwargs: Any) -> list[Score]:
    """Score ``(prompt, answer, known_good)`` items, in order (the client bounds the calls in flight)."""
    return list(await asyncio.gather(*(score_answer(client, prompt, answer, known_good=known_good, cache=cache,
                                                    **kwargs) for prompt, answer, known_good in items)))


def summarize_scores(scores: list[Score], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean 0–100 score with a bootstrap 95 % interval over the parsed scores, and how many did not parse
    (reported, not hidden: the seed recipe silently averaged over the parsed ones only)."""
    from judge.stats import bootstrap_ci

    values = [s.value for s in scores if s.value is not None]
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": sum(values) / len(values) if values else None, "ci_low": low, "ci_high": high,
            "n": len(scores), "parsed": len(values), "unparsed": len(scores) - len(values)}
