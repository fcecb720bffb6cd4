"""The judge's files, as types: what ``prefloop judge`` writes and what every report reads back.

- ``answers.jsonl``: one ``AnswerRow`` per held-out prompt (both models' answers and the known-good answer);
  how each side's answers were made is an ``AnswerSettings`` in ``results.json``;
- ``judgments.jsonl``: one ``JudgmentRow`` per (judge, prompt), written by the durable runner as it goes;
- ``validation.jsonl``: the same rows for the validation pairs (pairs whose better side is known), with the
  chosen answer in the policy's place and the rejected one in the reference's: a ``win`` is a correct verdict;
- ``results.json``: one ``JudgeResults`` (a ``StageResult``): per-judge ``JudgeSummary`` (its validation, win
  rate, interval, diagnostics), the skill ``Retention`` measured without any judge, agreement between judges,
  warnings, and the settings the numbers came from.

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
    logodds: float | None = None     # log P(first shown is better) - log P(second is), when the judge gives them


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
    position: float | None = None    # the judge's pull toward the first position, in log-odds (judge.stats)
    content: float | None = None     # its preference for the policy's answer with position taken out

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

    def decided(self, rule: str) -> Outcome:
        """The outcome under a verdict rule: ``orders`` (both orders must agree) or ``debiased`` (the sign of the
        content term of the judge's log-odds; rows without log-odds keep their ``orders`` outcome)."""
        if rule != "debiased" or self.content is None or self.identical:
            return self.outcome
        return "win" if self.content > 0 else "loss" if self.content < 0 else "tie"


@dataclass
class JudgeValidation:
    """One judge measured on pairs whose better side is known (``judge.validation``), both orders per pair.

    ``accuracy`` counts a pair as 1 when both orders picked the better answer, ½ for a tie or orders that
    disagree, 0 when both picked the worse one (the win rate's own rule, so a judge that always picks the first
    answer scores exactly 50 %); its interval is a pair-level bootstrap. ``debiased_*`` is the same accuracy from
    the sign of the content term of the judge's log-odds (``judge.stats.position_and_content``), for judges that
    return log-probabilities. ``rule`` is the verdict rule this judge's win rate uses: ``debiased`` only where it
    measurably beat ``orders`` here (higher accuracy, interval above 50 %).
    """

    judge: str
    source: str = ""
    n: int = 0
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    correct: int = 0
    ties: int = 0
    wrong: int = 0
    unparsed: int = 0
    position_consistency: float | None = None
    first_position_rate: float | None = None
    longer_pick_rate: float | None = None
    debiased_accuracy: float | None = None
    debiased_ci_low: float | None = None
    debiased_ci_high: float | None = None
    mean_position: float | None = None
    rule: str = "orders"
    rule_reason: str = ""            # why that rule decides, in words (judge.validation.choose_rule)

    @property
    def ci(self) -> tuple[float | None, float | None]:
        """The interval of the rule in use."""
        if self.rule == "debiased":
            return self.debiased_ci_low, self.debiased_ci_high
        return self.ci_low, self.ci_high

    @property
    def rule_accuracy(self) -> float | None:
        return self.debiased_accuracy if self.rule == "debiased" else self.accuracy

    @property
    def above_chance(self) -> bool:
        """The whole interval of the rule in use lies above 50 %: this judge can tell better from worse here."""
        low = self.ci[0]
        return low is not None and low > 0.5


@dataclass
class JudgeSummary:
    """One judge's numbers over the held-out prompts. ``diagnostics`` holds ``judge.stats.diagnostics`` plus
    counts (unparsed, inconsistent, identical answers, calls, cached games, mean lengths). ``rule`` is how its
    verdicts were decided (``JudgmentRow.decided``); ``validation`` what it scored on the validation pairs."""

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
    rule: str = "orders"
    validation: JudgeValidation | None = None

    @property
    def at_chance(self) -> bool:
        """Validated, and no better than chance: this judge's win rate would mean nothing."""
        return self.validation is not None and self.validation.n > 0 and not self.validation.above_chance

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JudgeSummary":
        summary = from_fields(cls, data)
        if isinstance(data.get("validation"), dict):
            summary.validation = from_fields(JudgeValidation, data["validation"])
        return summary


@dataclass
class SideSkill:
    """What one model's held-out answers keep of the task, read from the answers alone (``judge.retention``).

    ``content_recall`` and ``rouge_l`` are means over the prompts with a known-good answer; the rest over all
    held-out prompts. ``stock_opening`` is the opening (first words) most answers share, ``stock_share`` the share
    of answers that open with it; ``score`` the mean 0-100 correctness score a model judge gave (score mode)."""

    content_recall: float | None = None
    rouge_l: float | None = None
    stock_opening: str | None = None
    stock_share: float = 0.0
    loops: int = 0
    empty: int = 0
    mean_chars: float = 0.0
    score: float | None = None


@dataclass
class PromptSkill:
    """Content-word recall of the known-good answer for one prompt, for both models."""

    id: str
    policy: float
    reference: float


@dataclass
class Retention:
    """Skill retention of the trained model against its reference on the held-out prompts, without any judge.

    ``kept`` = the policy's mean content-word recall / the reference's; ``diff_ci`` the paired bootstrap interval
    of the per-prompt difference (policy - reference); ``better``/``worse``/``same`` count the prompts on which the
    policy kept more, less or as much of the known-good answer's content. ``lost`` is the verdict
    (``judge.retention.lost_skill``): clearly less than the reference."""

    n: int = 0                       # held-out prompts
    n_known_good: int = 0            # of which with a known-good answer
    policy: SideSkill = field(default_factory=SideSkill)
    reference: SideSkill = field(default_factory=SideSkill)
    kept: float | None = None
    diff_ci: list[float | None] = field(default_factory=lambda: [None, None])
    better: int = 0
    worse: int = 0
    same: int = 0
    length_ratio: float | None = None
    lost: bool = False
    scored_by: str | None = None     # the judge that gave the 0-100 scores, if any
    per_prompt: list[PromptSkill] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Retention":
        ret = from_fields(cls, data)
        ret.policy = from_fields(SideSkill, data.get("policy") or {})
        ret.reference = from_fields(SideSkill, data.get("reference") or {})
        ret.per_prompt = [from_fields(PromptSkill, p) for p in data.get("per_prompt") or []]
        return ret


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
    retention: Retention | None = None
    validated_on: str = ""                                   # the validation pairs file, if any
    answer_formats: dict[str, int] = field(default_factory=dict)  # how the prompts reached the models: format -> n

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
        if isinstance(data.get("retention"), dict):
            res.retention = Retention.from_json(data["retention"])
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
