"""The judge's files, as types: what ``prefloop judge`` writes and what every report reads back.

- ``answers.jsonl``: one ``AnswerRow`` per held-out prompt (both models' answers and the known-good answer);
  how each side's answers were made is an ``AnswerSettings`` in ``results.json``;
- ``judgments.jsonl``: one ``JudgmentRow`` per (judge, prompt), written by the durable runner as it goes;
- ``results.json``: one ``JudgeResults`` (a ``StageResult``): per-judge ``JudgeSummary`` (win rate, interval,
  diagnostics), agreement between judges, warnings, and the settings the numbers came from.

Nothing reads these files by guessing field names: the writer and every reader go through ``from_json`` /
``to_json`` here, so a renamed field fails a test instead of showing the wrong cell in a report.

Words: *policy* is the trained model, *reference* its starting point (the reference model), *known-good* the
dataset's own answer. An outcome is from the policy's side: ``win``, ``tie`` or ``loss``; a judgment whose
verdict never parsed counts as a tie in the win rate and is reported as ``unparsed``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from prefloop.files import atomic_write_json
from prefloop.jsonl import iter_jsonl, write_jsonl
from prefloop.records import Prompt, stable_id
from prefloop.stage import StageResult, from_fields

Outcome = Literal["win", "tie", "loss"]
Winner = Literal["policy", "reference", "tie"]


@dataclass
class AnswerSettings:
    """How one side's answers were made (``results.json``: ``policy_answers``, ``reference_answers``).

    The two sides must agree on what shapes an answer (``SHAPING``), or the judge refuses to compare them: a win
    rate between answers made differently measures the making, not the training. Only the seed may differ, in an
    A/A test (the same model on both sides, sampled: the reference side takes the next seed). ``runtime``,
    ``quantization`` and ``digest`` say what served them (``prefloop.llm.base.ModelFacts``); a difference there
    is a warning, not a refusal.
    """

    model: str
    temperature: float
    seed: int
    max_tokens: int
    prompt_format: str          # text: the prompt exactly as trained, no chat template; chat: the model's template
    runtime: str = ""
    template: str = ""          # digest of the chat template applied to chat prompts ("" for text prompts)
    quantization: str = ""
    digest: str = ""

    SHAPING = ("temperature", "max_tokens", "prompt_format", "template")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "AnswerSettings | None":
        return from_fields(cls, data) if data else None

    def key(self) -> str:
        """One string for all of it: an answer row is reused only by a run with the same settings."""
        return stable_id(*dataclasses.astuple(self))

    def mismatch(self, other: "AnswerSettings", same_model: bool = False) -> str:
        """Why these and ``other`` cannot be compared (``""`` when they can)."""
        names = [n for n in self.SHAPING if getattr(self, n) != getattr(other, n)
                 and not (n == "template" and self.prompt_format == other.prompt_format == "text")]
        if self.seed != other.seed and not same_model:
            names.append("seed")
        return ", ".join(f"{n} {getattr(self, n)!r} vs {getattr(other, n)!r}" for n in names)


@dataclass
class AnswerRow:
    """Both models' answers to one held-out prompt (``answers.jsonl``); ``settings`` is the policy side's
    ``AnswerSettings.key()`` (the reference's matches it but for its model and, in an A/A test, its seed)."""

    id: str
    prompt: Prompt
    policy_answer: str
    reference_answer: str
    known_good: str | None = None
    policy_model: str = ""
    reference_model: str = ""
    settings: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AnswerRow":
        return from_fields(cls, data)

    @property
    def key(self) -> str:
        """The two answers' digest: a judgment belongs to this row when it judged these answers."""
        return stable_id(self.policy_answer, self.reference_answer)


@dataclass
class Game:
    """One judge call, by content: which answer was shown first, which the judge picked (None: its reply never
    parsed), the verdict as written (by position), and how it was obtained. ``judge.pairwise`` names the answers
    ``A`` and ``B`` (its arguments); in ``judgments.jsonl`` they are ``policy`` and ``reference``."""

    first: str
    pick: str | None
    shown: str | None = None
    reason: str = ""
    raw: str = ""
    attempts: int = 0
    cached: bool = False


@dataclass
class JudgmentRow:
    """One judge's verdict on one prompt (``judgments.jsonl``): both orders folded into one outcome."""

    judge: str
    prompt_id: str
    outcome: Outcome
    winner: Winner | None            # None: a game never parsed (the outcome is then a tie)
    len_policy: int
    len_reference: int
    consistent: bool | None = None   # the two orders agreed (None: not both parsed, or not judged)
    identical: bool = False          # the answers were identical: a tie without asking the judge
    unparsed: bool = False
    skipped: bool = False            # a person skipped this prompt: no verdict, left out of the win rate
    games: list[Game] = field(default_factory=list)
    answers: str = ""                # AnswerRow.key of the answers judged
    id: str = ""                     # the runner's job id (judge, template, answers, options)

    @classmethod
    def of(cls, row: AnswerRow, judge: str, **verdict: Any) -> "JudgmentRow":
        """A verdict on ``row``'s answers (their lengths and digest filled in)."""
        return cls(judge=judge, prompt_id=row.id, len_policy=len(row.policy_answer),
                   len_reference=len(row.reference_answer), answers=row.key, **verdict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JudgmentRow":
        row = from_fields(cls, data)
        row.games = [from_fields(Game, g) for g in data.get("games") or []]
        return row

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def verdict(self) -> str:
        """The verdict in words, as every report shows it."""
        if self.identical:
            return "identical answers (tie)"
        if self.unparsed:
            return "unparsed (counted as a tie)"
        if self.skipped:
            return "skipped by the rater (not counted)"
        text = {"policy": "trained model wins", "reference": "reference wins", "tie": "tie"}[self.winner or "tie"]
        return text + (" (the two orders disagreed)" if self.consistent is False else "")

    @property
    def label(self) -> str:
        """For agreement between judges: ``win``/``tie``/``loss``, or ``unparsed``."""
        return "unparsed" if self.unparsed else self.outcome


@dataclass
class JudgeSummary:
    """One judge's numbers over the held-out prompts. ``diagnostics`` holds ``judge.stats.diagnostics`` plus
    counts (unparsed, inconsistent, identical answers, calls, cached games, mean lengths)."""

    judge: str
    n: int = 0
    win_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    lc_win_rate: float | None = None
    lc_slope: float | None = None
    lc_warning: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)   # the runner's account (failed, interrupted, retries)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JudgeSummary":
        return from_fields(cls, data)


@dataclass
class Agreement:
    """Cohen's κ and raw agreement between two judges over the prompts both judged."""

    a: str
    b: str
    kappa: float | None
    agreement: float | None
    n: int


@dataclass
class Calibration:
    """A model judge measured against a person (a ``human`` judge) on the prompts both judged:
    ``judge.stats.against_person`` plus their κ."""

    person: str
    judge: str
    n: int
    kappa: float | None
    agreement: float | None
    agree_first: float | None = None
    agree_second: float | None = None
    position_bias: float | None = None
    longer_judge: float | None = None
    longer_person: float | None = None
    length_bias: float | None = None


@dataclass
class JudgeResults(StageResult):
    """``results.json``: what one ``prefloop judge`` run found (``judge`` names the headline judge)."""

    judge: str = ""
    judges: dict[str, JudgeSummary] = field(default_factory=dict)
    kappa: list[Agreement] = field(default_factory=list)
    calibration: list[Calibration] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policy: str = ""
    reference: str = ""
    prompts: str = ""
    n_prompts: int = 0
    confidence: float = 0.95
    n_boot: int = 0
    robustness: dict[str, Any] | None = None
    template: str = ""
    template_hash: str = ""
    policy_answers: AnswerSettings | None = None
    reference_answers: AnswerSettings | None = None
    time: str = ""

    @property
    def headline(self) -> JudgeSummary:
        return self.judges.get(self.judge) or JudgeSummary(judge=self.judge)

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, _finite(self.to_json()))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JudgeResults":
        res = from_fields(cls, data)
        res.judges = {k: JudgeSummary.from_json(v) for k, v in (data.get("judges") or {}).items()}
        res.kappa = [from_fields(Agreement, k) for k in data.get("kappa") or []]
        res.policy_answers = AnswerSettings.from_json(data.get("policy_answers"))
        res.reference_answers = AnswerSettings.from_json(data.get("reference_answers"))
        res.calibration = [from_fields(Calibration, c) for c in data.get("calibration") or []]
        return res


def write_answers(path: str | Path, rows: list[AnswerRow]) -> None:
    write_jsonl(path, [dataclasses.asdict(r) for r in rows])


def read_answers(path: str | Path) -> list[AnswerRow]:
    path = Path(path)
    return [AnswerRow.from_json(obj) for _, obj in iter_jsonl(path)] if path.exists() else []


def iter_judgments(path: str | Path) -> Iterator[JudgmentRow]:
    """Judgment rows as written (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if path.exists():
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and "prompt_id" in obj:
                yield JudgmentRow.from_json(obj)


def current_judgments(answers: list[AnswerRow], path: str | Path) -> dict[str, dict[str, JudgmentRow]]:
    """``{judge: {prompt id: row}}`` for the answers as they are now: the log may also hold judgments of earlier
    answers (another policy judged into the same folder); of several for the same answers, the last written."""
    keys = {a.id: a.key for a in answers}
    out: dict[str, dict[str, JudgmentRow]] = {}
    for row in iter_judgments(path):
        if keys.get(row.prompt_id) == row.answers:
            out.setdefault(row.judge, {})[row.prompt_id] = row
    return out


def _finite(obj: Any) -> Any:
    """NaN and infinity are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
