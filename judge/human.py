"""A person as the judge: ``--judge human`` (or ``human:NAME``; bare ``human`` is your login name).

The person sees each held-out prompt with the policy's and the reference's answers, blinded (no model names) and
left/right shuffled per prompt from ``judge_seed``, on the labelling screen (``prefloop.screen``, the deck
``judge.label.Session``). Each verdict is appended at once to ``OUTPUT/human-labels.jsonl`` (``judge.labels``), so
quitting or a killed terminal loses at most the prompt on screen and the same command resumes; ``u`` undoes, also
after a restart. The verdicts become the same ``JudgmentRow``s a model judge writes (one game per prompt: the order
it was shown in), so the win rate, its interval and the report are computed by the same code. A skipped prompt is
no verdict: it is left out of this judge's n. Identical answers are ties without asking, as for a model judge.

With a model judge on the same prompts, ``calibrations`` measures that judge against the person: Cohen's κ, and
its position and length bias beyond the person's own (``judge.stats.against_person``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judge.config import JudgeConfig, is_human, rater_of
from judge.label import Play, Session, Slot, play_in_terminal, screen_for
from judge.labels import Item, Label, LabelLog, LabelWriter
from judge.results import AnswerRow, Calibration, Game, JudgmentRow, iter_judgments
from judge.stats import GameRecord, against_person
from prefloop.files import Lock
from prefloop.jsonl import JsonlAppender
from prefloop.records import stable_id
from prefloop.runner import RunSummary

SIDE = {"a": "policy", "b": "reference", "tie": "tie"}
OUTCOME = {"a": "win", "b": "loss", "tie": "tie", "skip": "tie"}
LETTER = {"policy": "A", "reference": "B", "tie": "tie", None: None}


def judgment_of(row: AnswerRow, judge: str, label: Label) -> JudgmentRow:
    """A person's label as the judge's row: ``a`` is the policy's answer, ``b`` the reference's."""
    if label.verdict == "skip":
        return JudgmentRow.of(row, judge, outcome="tie", winner=None, skipped=True, id=label.id)
    pick = SIDE[label.verdict]
    game = Game(first="policy" if label.left == "a" else "reference", pick=pick,
                shown={"left": "A", "right": "B"}.get(label.key, "tie"), raw=label.key, attempts=1)
    return JudgmentRow.of(row, judge, outcome=OUTCOME[label.verdict], winner=pick, games=[game],  # type: ignore
                          id=label.id)


async def judge_human(cfg: JudgeConfig, judge: str, answers: list[AnswerRow], console: Any = None,
                      play: Play | None = None) -> tuple[dict[str, JudgmentRow], RunSummary]:
    """Ask the person about every answer pair not yet judged by them; returns rows by prompt id (as
    ``judge.evaluate.judge_all`` does) and a summary that is ``interrupted`` when they quit before the end."""
    out = Path(cfg.output_dir)
    path, rater = out / "human-labels.jsonl", rater_of(judge)
    rows: dict[str, JudgmentRow] = {}
    asked: dict[str, AnswerRow] = {}
    for row in answers:
        if not cfg.judge_identical and row.policy_answer.strip() == row.reference_answer.strip():
            rows[row.id] = JudgmentRow.of(row, judge, outcome="tie", winner="tie", identical=True,
                                          id=stable_id(judge, row.id, row.key))
        else:
            asked[stable_id("judge", row.id, row.key)] = row
    items = [Item(id=iid, prompt=row.prompt, a=row.policy_answer, b=row.reference_answer, meta={"prompt_id": row.id})
             for iid, row in asked.items()]
    with Lock(path):
        log = LabelLog.read(path)
        with LabelWriter(path, log) as writer:
            session = Session([Slot(item) for item in items], log, writer, rater, cfg.judge_seed,
                              heading="held-out prompt {n} of {total}")
            if not session.finished:
                if console is not None:
                    console.print(f"judging as {rater}: {session.counts()[1] - session.counts()[0]} prompts to go")
                await (play or play_in_terminal)(screen_for(session, f"prefloop judge ({judge})"))
            done, total = session.counts()
        mine = LabelLog.read(path).first_labels().get(rater, {})
    rows.update({asked[iid].id: judgment_of(asked[iid], judge, label) for iid, label in mine.items() if iid in asked})
    written = {r.id for r in iter_judgments(out / "judgments.jsonl")}
    new = [r for r in rows.values() if r.id not in written]
    with JsonlAppender(out / "judgments.jsonl") as log:   # the same file model judges write, read by every report
        for r in new:
            log.append(r.to_json())
    summary = RunSummary(total=len(answers), written=len(new), skipped_existing=len(rows) - len(new),
                         interrupted=done < total)
    return rows, summary


def calibrations(per_judge: dict[str, dict[str, JudgmentRow]], kappa: list[Any]) -> list[Calibration]:
    """Every model judge against every human judge, on the prompts the person decided."""
    agree = {(k.a, k.b): k for k in kappa} | {(k.b, k.a): k for k in kappa}
    out = []
    for person in (j for j in per_judge if is_human(j)):
        decided = {pid: LETTER[r.winner] for pid, r in per_judge[person].items()
                   if not r.skipped and r.winner in ("policy", "reference")}
        for judge in (j for j in per_judge if not is_human(j)):
            games = [GameRecord(r.prompt_id, first=LETTER[g.first], pick=LETTER[g.pick], len_a=r.len_policy,
                                len_b=r.len_reference) for r in per_judge[judge].values() for g in r.games]
            got = against_person(decided, games)  # type: ignore[arg-type]
            k = agree.get((person, judge))
            out.append(Calibration(person=person, judge=judge, n=got.n, kappa=k.kappa if k else None,
                                   agreement=k.agreement if k else None, agree_first=got.agree_first,
                                   agree_second=got.agree_second, position_bias=got.position_bias,
                                   longer_judge=got.longer_judge, longer_person=got.longer_person,
                                   length_bias=got.length_bias))
    return out
