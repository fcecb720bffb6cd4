"""Pairwise judging: which of two answers is better, asked in both orders.

The judge sees the prompt (and a reference answer when there is one) and answers ``{"reason", "winner"}`` under a
JSON schema; ``reason`` comes first so the judge explains before it decides. Every pair is judged twice, once with
each answer first (FastChat's MT-Bench rule): if the two orders disagree the pair is a tie and is counted as
inconsistent, which turns the judge's position bias into ties instead of into a fake preference.

``PairVerdict.winner`` names answers, not positions: ``"A"`` is the ``answer_a`` argument.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from judge.cache import JudgeCache, judgment_key
from judge.core import DEFAULT_OPTIONS, ask_parsed, judge_name, options_key
from judge.prompts import JudgeTemplate, check_fields, judge_prompt_text, load_template
from judge.results import Game
from prefloop.llm.base import GenOptions
from prefloop.records import Prompt

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
    },
    "required": ["reason", "winner"],
}

_TIE_WORDS = {"TIE", "C", "EQUAL", "DRAW", "BOTH", "NEITHER", "SAME", "A=B"}
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
_WINNER_FIELD = re.compile(r'"winner"\s*:\s*"([^"]{1,40})"', re.IGNORECASE)


@dataclass
class PairVerdict:
    """Both orders folded into one verdict on ``answer_a`` vs ``answer_b``.

    ``winner`` is ``"A"``, ``"B"`` or ``"tie"`` (a tie also when the orders disagree), or None when an order
    never gave a usable reply (``unparsed``; the evaluation counts it as a tie and reports it).
    """

    winner: str | None
    consistent: bool | None
    games: list[Game] = field(default_factory=list)

    @property
    def unparsed(self) -> bool:
        return any(g.pick is None for g in self.games)

    @property
    def calls(self) -> int:
        return sum(g.attempts for g in self.games)

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner, "consistent": self.consistent, "games": [asdict(g) for g in self.games]}


def normalize_winner(value: Any) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from the many ways judges write it ("Assistant A", "[[B]]", "Tie", "C")."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip("[]()\"'`.* ").upper()
    for prefix in ("ASSISTANT ", "ANSWER ", "RESPONSE ", "MODEL ", "OUTPUT "):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    if text in ("A", "B"):
        return text
    if text in _TIE_WORDS:
        return "tie"
    return None


def parse_verdict(data: Any, text: str) -> dict[str, Any] | None:
    """``{"winner": A|B|tie, "reason": str}`` (positions as shown) from the parsed JSON or the raw text, plus
    ``logodds`` (for the answer shown first) when the judge's reply carries its token log-probabilities."""
    if not isinstance(data, dict):
        data = None
        match = re.search(r"\{.*\}", text or "", re.DOTALL)
        if match:
            try:
                loaded = json.loads(match.group(0))
                data = loaded if isinstance(loaded, dict) else None
            except json.JSONDecodeError:
                data = None
    if data is not None:
        winner = normalize_winner(data.get("winner"))
        if winner is not None:
            reason = data.get("reason")
            out: dict[str, Any] = {"winner": winner, "reason": reason if isinstance(reason, str) else ""}
            logodds = data.get("logodds")
            if isinstance(logodds, (int, float)) and not isinstance(logodds, bool) and math.isfinite(logodds):
                out["logodds"] = float(logodds)  # a judge that reads its verdict from token probabilities
            return out
    text = text or ""
    field_match = _WINNER_FIELD.search(text)
    if field_match and normalize_winner(field_match.group(1)):
        return {"winner": normalize_winner(field_match.group(1)), "reason": ""}  # type: ignore[dict-item]
    bracketed = _BRACKETED.findall(text)
    if bracketed:  # the last one: judges restate the format before giving their verdict (arena-hard's rule)
        return {"winner": normalize_winner(bracketed[-1]), "reason": text.strip()[:500]}  # type: ignore[dict-item]
    return None


def _to_content(shown: str, first: str) -> str:
    """Map a positional verdict back to answers: position A holds ``first``."""
    if shown == "tie":
        return "tie"
    other = "B" if first == "A" else "A"
    return first if shown == "A" else other


async def judge_order(client: Any, template: JudgeTemplate, prompt: str, first_answer: str, second_answer: str,
                      *, known_good: str | None, cache: JudgeCache | None, options: GenOptions,
                      attempts: int) -> tuple[dict[str, Any] | None, str, int, bool]:
    """One call with ``first_answer`` in position A; returns (verdict by position, raw, attempts, cached)."""
    if hasattr(client, "pick"):  # a python: or reward: judge reads the answers themselves (judge.direct)
        from judge.direct import ask_direct

        got = await ask_direct(client, prompt, first_answer, second_answer, cache=cache,
                               template_hash=template.hash, options=options_key(options))
        return got, got.get("reason", ""), 0 if got.get("cached") else 1, bool(got.get("cached"))
    messages = template.render(prompt=prompt, answer_a=first_answer, answer_b=second_answer, known_good=known_good)
    key = judgment_key(judge=judge_name(client), template_hash=template.hash, mode="pairwise", prompt=prompt,
                       answers=(first_answer, second_answer), known_good=known_good, options=options_key(options))
    got = await ask_parsed(client, messages, parse=parse_verdict, schema=VERDICT_SCHEMA, options=options,
                    attempts=attempts, cache=cache, key=key)
    return got.value, got.raw, got.attempts, got.cached


async def judge_pair(client: Any, prompt: Prompt, answer_a: str, answer_b: str, *, known_good: str | None = None,
                     cache: JudgeCache | None = None, template: JudgeTemplate | str | None = None,
                     options: GenOptions | None = None, attempts: int = 3) -> PairVerdict:
    """Judge ``answer_a`` against ``answer_b`` in both orders (concurrently) and fold the two verdicts."""
    tpl = template if isinstance(template, JudgeTemplate) else load_template(template or "pairwise")
    check_fields(tpl, ("prompt", "answer_a", "answer_b"))
    text = judge_prompt_text(prompt)
    opts = options or DEFAULT_OPTIONS
    results = await asyncio.gather(
        judge_order(client, tpl, text, answer_a, answer_b, known_good=known_good, cache=cache, options=opts,
                    attempts=attempts),
        judge_order(client, tpl, text, answer_b, answer_a, known_good=known_good, cache=cache, options=opts,
                    attempts=attempts),
    )
    games = []
    for first, (verdict, raw, n, cached) in zip(("A", "B"), results):
        shown = verdict["winner"] if verdict else None
        games.append(Game(first=first, pick=_to_content(shown, first) if shown else None, shown=shown,
                          reason=verdict["reason"] if verdict else "", raw=raw, attempts=n, cached=cached,
                          logodds=verdict.get("logodds") if verdict else None))
    return fold(games)


def fold(games: list[Game]) -> PairVerdict:
    """Two orders -> one verdict: agreement keeps the pick, disagreement is an inconsistent tie."""
    picks = [g.pick for g in games]
    if any(p is None for p in picks):
        return PairVerdict(winner=None, consistent=None, games=games)
    if len(set(picks)) == 1:
        return PairVerdict(winner=picks[0], consistent=True, games=games)
    return PairVerdict(winner="tie", consistent=False, games=games)
