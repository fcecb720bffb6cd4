"""Preflight: can the SFT model already do the task? The seed recipe's first step, judged before any training.

The judge scores the SFT model's answers to a few held-out prompts (0–100) next to the dataset's own answers
under the same judge, and the check warns, with the numbers, when the model looks like it cannot do the task yet
(a base model, or the wrong prompt format): DPO shapes style and preference; it does not teach the task.

The judge is measured first, like every judge (``judge.validation``): it also scores a deliberately wrong answer
to each prompt (another prompt's dataset answer, ``broken_answer``). A judge that does not score the dataset's
own answers above those on most prompts cannot tell good from bad here, so then the check says it is
inconclusive instead of blaming the model, and its advice fits the judge in use (``judge_advice``: a stronger
judge than this one, never the same).

Files: ``answers.jsonl`` (one ``PreflightRow`` per prompt) and ``summary.json`` (a ``PreflightResult``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.cache import JudgeCache
from judge.config import JudgeConfig
from judge.scoring import score_answer
from prefloop.config import at_least, section, setting
from prefloop.files import atomic_write_json
from prefloop.jsonl import write_jsonl
from prefloop.llm.base import GenOptions, parse_spec
from prefloop.report import pct
from prefloop.records import PromptRecord, prompt_text
from prefloop.stage import StageResult

RULES = 4  # bumped when the warning rules or the SFT model's prompts (4: the trainer's rendering) change, so a finished preflight is judged again by the new rules


@section("preflight")
@dataclass
class PreflightConfig:
    """The ``[preflight]`` section of ``prefloop run``."""

    enabled: bool = setting(True, "score the SFT model's answers before training")
    prompts: int = setting(4, "held-out prompts the SFT model answers before training")
    judge: str = setting("", "scoring model (default: the first judge)")
    min_score: float = setting(40.0, "warn when the SFT answers' mean score (0-100) is below this ...")
    min_ratio: float = setting(0.6, "... or below this share of the dataset answers' mean score")
    min_judge_accuracy: float = setting(0.75, "the judge must score the dataset's answers above deliberately wrong "
                                              "ones on this share of the prompts, or the check is inconclusive")
    max_tokens: int = setting(192, "answer length for the check")
    stop_on_warning: bool = setting(False, "stop the loop instead of training a model that cannot do the task",
                                    runtime=True)

    def __post_init__(self) -> None:
        at_least(self, "preflight.", 1, "prompts", "max_tokens")
        at_least(self, "preflight.", 0, "min_score", "min_ratio")


@dataclass
class PreflightRow:
    id: str
    prompt: Any
    answer: str
    known_good: str | None
    score: float | None
    known_good_score: float | None
    broken: str | None = None              # a deliberately wrong answer (``broken_answer``)
    broken_score: float | None = None


@dataclass
class PreflightResult(StageResult):
    """The check's numbers and warnings (``summary.json``)."""

    judge: str = ""
    n: int = 0
    scored: int = 0
    mean_score: float | None = None
    mean_known_good_score: float | None = None
    mean_broken_score: float | None = None
    judge_accuracy: float | None = None    # share of prompts whose dataset answer outscored the wrong one
    empty: int = 0
    echo: int = 0
    warnings: list[str] = field(default_factory=list)


def run_preflight(p: PreflightConfig, judge_cfg: JudgeConfig, sft_model: str, prompts: list[PromptRecord],
                  judge_spec: str, out_dir: Path, console: Any = None) -> PreflightResult:
    """Answer ``prompts`` with the SFT model, score those answers and the known-good ones, and judge the result."""
    from prefloop.llm import make_client

    prompts = prompts[: p.prompts]
    sft_spec = "local:" + str(sft_model)
    sft = make_client(sft_spec)
    # the SFT model answers as it is trained and judged (prefloop.templates), not the raw Alpaca text
    from prefloop.models import load_tokenizer
    from prefloop.templates import prompt_for

    templated = bool(getattr(load_tokenizer(str(sft_model)), "chat_template", None))
    answers = sft.generate_batch([prompt_for(r, judge_cfg.prompt_format, templated)[0] for r in prompts],
                                 GenOptions(temperature=0.0, max_tokens=p.max_tokens))
    if judge_spec == sft_spec:
        judge = sft
    elif not parse_spec(judge_spec).chat:  # a python: or reward: judge scores directly
        from judge.kinds import make_direct

        judge = make_direct(judge_spec)
    else:
        judge = make_client(judge_spec, timeout=judge_cfg.timeout_s)
    from judge.logprob import scoring_client

    options = judge_cfg.score_options()
    scorer = scoring_client(judge_spec, judge, judge_cfg.verdict)  # a local judge: from token probabilities
    broken = [broken_answer([r.known_good for r in prompts], i) for i in range(len(prompts))]

    async def score_all(cache: JudgeCache) -> list[tuple[Any, Any, Any]]:
        async def one(rec: PromptRecord, answer: str, wrong: str | None) -> tuple[Any, Any, Any]:
            async def score(text: str | None) -> Any:
                if text is None:
                    return None
                return await score_answer(scorer, rec.prompt, text, known_good=rec.known_good, cache=cache,
                                          options=options)

            # the dataset's own answer: the judge's ceiling on this task; a wrong one: can it tell them apart?
            return await score(answer), await score(rec.known_good), await score(wrong)

        try:
            await judge.preflight()
            # all at once: a served judge takes them in parallel, a local one in a single batch
            return list(await asyncio.gather(*(one(r, a, b) for r, a, b in zip(prompts, answers, broken))))
        finally:  # close in the loop that opened the connections
            for client in dict.fromkeys((judge, sft)):
                await client.aclose()

    with JudgeCache(judge_cfg.cache_path) as cache:
        scores = asyncio.run(score_all(cache))
    rows = [PreflightRow(id=r.id, prompt=r.prompt, answer=a, known_good=r.known_good, score=mine.value,
                         known_good_score=ref.value if ref is not None else None, broken=b,
                         broken_score=bad.value if bad is not None else None)
            for r, a, b, (mine, ref, bad) in zip(prompts, answers, broken, scores)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "answers.jsonl", [dataclasses.asdict(r) for r in rows])
    result = preflight_verdict(rows, p, judge_spec)
    result.outputs = {"answers": str(out_dir / "answers.jsonl"), "summary": str(out_dir / "summary.json")}
    atomic_write_json(out_dir / "summary.json", result.to_json())
    if console is not None:
        console.print(f"  SFT answers: mean score {_num(result.mean_score)}/100 (dataset answers "
                      f"{_num(result.mean_known_good_score)}, wrong answers {_num(result.mean_broken_score)}), "
                      f"{result.empty} empty, {result.echo} echo the prompt")
    return result


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def broken_answer(known_good: list[str | None], i: int) -> str | None:
    """A deliberately wrong answer to prompt ``i``: the next prompt's dataset answer that differs from its own
    (fluent, on-format, and wrong), else its own answer's words in reverse order; None without a known-good one."""
    mine = known_good[i]
    if not mine:
        return None
    for k in range(1, len(known_good)):
        other = known_good[(i + k) % len(known_good)]
        if other and other.strip() != mine.strip():
            return other
    return " ".join(reversed(mine.split()))


def judge_accuracy(rows: list[PreflightRow]) -> float | None:
    """Share of prompts whose dataset answer the judge scored above the wrong one (a tie or a missing score
    counts half); None when no prompt has both."""
    def one(r: PreflightRow) -> float:
        if r.known_good_score is None or r.broken_score is None or r.known_good_score == r.broken_score:
            return 0.5
        return 1.0 if r.known_good_score > r.broken_score else 0.0

    tested = [one(r) for r in rows if r.broken is not None]
    return sum(tested) / len(tested) if tested else None


def preflight_verdict(rows: list[PreflightRow], p: PreflightConfig, judge_spec: str) -> PreflightResult:
    """Numbers and warnings from the preflight answers. Warns on a low judge score (absolute, or relative to
    the dataset's own answers under the same judge) and on the signs of a base model: empty answers and answers
    that continue the prompt instead of answering it."""
    scores = [r.score for r in rows if r.score is not None]
    mean, mean_ref = _mean(scores), _mean([r.known_good_score for r in rows if r.known_good_score is not None])
    mean_broken = _mean([r.broken_score for r in rows if r.broken_score is not None])
    accuracy = judge_accuracy(rows)
    empty = sum(1 for r in rows if not r.answer.strip())
    echo = sum(1 for r in rows if echoes(prompt_text(r.prompt), r.answer))
    warnings, why = [], []
    # a judge that does not score the dataset's own answers above wrong ones cannot tell good from bad on this
    # task: its low score for the model says nothing, so the check is called inconclusive, not blamed on the model
    judge_can_tell = accuracy is None or accuracy >= p.min_judge_accuracy
    # an absolute threshold needs a judge whose scale reaches it for the dataset's own answers
    scale_ok = judge_can_tell and (mean_ref is None or mean_ref >= p.min_score)
    if mean is not None and scale_ok and mean < p.min_score:
        why.append(f"its answers score {mean:.0f}/100 on average (threshold {p.min_score:.0f})")
    if mean is not None and judge_can_tell and mean_ref and mean < p.min_ratio * mean_ref:
        why.append(f"that is under {p.min_ratio:.0%} of the {mean_ref:.0f}/100 the same judge gives the dataset's "
                   f"own answers")
    if rows and (empty + echo) * 2 >= len(rows):
        why.append(f"{empty} of {len(rows)} answers are empty and {echo} continue the prompt instead of answering")
    if why:
        warnings.append(
            f"preflight: the SFT model may not be able to do the task yet: {'; '.join(why)} "
            f"(judge {judge_spec}, {len(rows)} held-out prompts). DPO shapes style and preference; it does not "
            f"teach the task. If this is a base model, fine-tune it first (`prefloop sft`), or check the prompt "
            f"format matches what it was tuned on.")
    if accuracy is not None and not judge_can_tell:
        from judge.validation import judge_advice  # judge.stats pulls numpy: not on `prefloop --help`'s path

        tested = sum(r.broken is not None for r in rows)
        warnings.append(f"preflight inconclusive: the judge {judge_spec} scored the dataset's own answers above "
                        f"deliberately wrong ones (another prompt's answer) on only {accuracy:.0%} of {tested} "
                        f"prompts (dataset answers {_num(mean_ref)}/100, wrong ones {_num(mean_broken)}/100, the "
                        f"SFT model's {_num(mean)}/100), so its scores cannot tell whether the model can do the "
                        f"task; for a judge that can, {judge_advice(judge_spec, 'preflight')}")
    if not scores and rows:
        warnings.append(f"preflight: the judge {judge_spec} gave no usable score for {len(rows)} answers; "
                        f"the check could not run")
    return PreflightResult(judge=judge_spec, n=len(rows), scored=len(scores), mean_score=mean,
                           mean_known_good_score=mean_ref, mean_broken_score=mean_broken, judge_accuracy=accuracy,
                           empty=empty, echo=echo, warnings=warnings)


def echoes(prompt: str, answer: str) -> bool:
    """An answer that repeats a long stretch of the prompt: what base models do with an instruction."""
    answer = " ".join(answer.split())
    prompt = " ".join(prompt.split())
    if len(answer) < 40 or len(prompt) < 40:
        return False
    return any(prompt[i:i + 40] in answer for i in range(0, len(prompt) - 40, 20))


def add_preflight_section(report: Any, out_dir: Path) -> PreflightResult | None:
    """The run report's preflight section, from ``summary.json`` and ``answers.jsonl``."""
    from prefloop.jsonl import read_jsonl

    summary = PreflightResult.read(out_dir / "summary.json")
    if summary is None:
        return None
    report.heading("Preflight: can the SFT model already do the task?")
    report.paragraph("DPO shapes style and preference on top of a skill the model already has; it does not teach "
                     "the skill. Before training, the judge scored the SFT model's answers to a few held-out "
                     "prompts (0–100) next to the dataset's own answers, and a deliberately wrong answer (another "
                     "prompt's) to check that it can tell them apart.")
    report.key_values({"prompts": summary.n, "scored": summary.scored, "SFT answers, mean score": summary.mean_score,
                       "dataset answers, mean score": summary.mean_known_good_score,
                       "wrong answers, mean score": summary.mean_broken_score,
                       "judge put the dataset answer above the wrong one": pct(summary.judge_accuracy),
                       "empty answers": summary.empty, "answers echoing the prompt": summary.echo,
                       "judge": summary.judge})
    if not summary.warnings:
        report.paragraph("No sign that the model cannot do the task.")
    answers = out_dir / "answers.jsonl"
    if answers.exists():
        from judge.prompts import judge_prompt_text

        report.table([{"prompt": _short(judge_prompt_text(r["prompt"]), 90), "SFT answer": _short(r["answer"], 120),
                       "score": r.get("score"), "dataset answer score": r.get("known_good_score"),
                       "wrong answer score": r.get("broken_score")}
                      for r in read_jsonl(answers)])
    return summary


def _short(text: Any, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
