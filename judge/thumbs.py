"""``prefloop label --mode thumbs``: a person marks each single answer desirable (thumbs up) or undesirable (thumbs
down); the result is ``{id, prompt, completion, label, meta}`` rows, KTO's data (``prefloop train --objective
kto``).

The same machinery as the pairwise screen (``judge.label``), one answer per screen instead of two: the answers are
loaded -> the output is locked -> its label log (``OUTPUT.labels.jsonl``) is read -> the screen shows the first
answer this rater has not marked -> every key is one line appended and flushed to the log, and an up or down one
labelled row appended to the output (an undo rebuilds it from the log). ``kill -9`` loses at most the answer on
screen; the same command resumes, ``u`` undoes across a restart, hidden repeats (``repeats``) measure
self-consistency, and raters are compared with Cohen's κ on up/down.

Log events, beside ``judge.labels``' (a log holds one mode or the other, never both):

- ``{"kind": "answer", "item", "prompt", "completion", "meta"}``: the answer marked, once before its first label;
- ``{"kind": "label", "id", "item", "rater", "verdict", "key", "repeat", "time", "seconds", "source"}`` with
  ``verdict`` ``up``, ``down`` or ``skip``; ``{"kind": "undo", ...}`` as in ``judge.labels``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from judge.config import LabelConfig
from judge.label import (LabelResult, NeedsTerminal, Play, Session, log_path, now_iso, plan, run_session, save,
                         shown_prompt)
from judge.labels import LabelLog, rater_agreement, self_consistency
from prefloop.jsonl import JsonlAppender, iter_jsonl, write_jsonl
from prefloop.records import LabelledRecord, Prompt, RecordError, stable_id
from prefloop.sources import DataError, LoadReport, iter_rows, to_labelled

ThumbVerdict = Literal["up", "down", "skip"]
THUMBS = ("up", "down", "skip")


@dataclass
class Answer:
    """One answer to one prompt, to be marked desirable or not (``id`` fixed by content)."""

    id: str
    prompt: Prompt
    completion: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "answer", "item": self.id, "prompt": self.prompt, "completion": self.completion,
                "meta": self.meta}


@dataclass
class Thumb:
    """One rater's thumbs up or down (or skip) on one answer."""

    id: str
    item: str
    rater: str
    verdict: ThumbVerdict
    key: str = ""
    repeat: bool = False
    time: str = ""
    seconds: float | None = None
    source: str = "terminal"

    @property
    def decided(self) -> bool:
        return self.verdict in ("up", "down")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "label", **dataclasses.asdict(self)}


class ThumbLog(LabelLog):
    """A thumbs log as read back: its answers and the labels still standing, in log order (``LabelLog``'s
    rater, first-label, agreement and consistency views work on it unchanged)."""

    items: dict[str, Answer]   # type: ignore[assignment]
    labels: list[Thumb]        # type: ignore[assignment]

    @classmethod
    def read(cls, path: str | Path) -> "ThumbLog":
        from prefloop.stage import from_fields

        log = cls()
        path = Path(path)
        if not path.exists():
            return log
        standing: dict[str, Thumb] = {}
        for line, obj in iter_jsonl(path):
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind == "answer":
                answer = Answer(id=str(obj["item"]), prompt=obj["prompt"], completion=obj["completion"],
                                meta=obj.get("meta") or {})
                log.items.setdefault(answer.id, answer)
            elif kind == "label":
                thumb = from_fields(Thumb, obj)
                if thumb.verdict not in THUMBS:
                    raise RecordError(str(path), line, "verdict", f"{thumb.verdict!r} is not one of up, down, skip")
                standing.setdefault(thumb.id, thumb)
            elif kind == "undo":
                log.undone += standing.pop(str(obj.get("undoes")), None) is not None
            elif kind == "item":
                raise RecordError(str(path), line, "kind", "this log holds pairwise labels (prefloop label without "
                                                           "--mode thumbs); give thumbs labels another --output")
            else:
                raise RecordError(str(path), line, "kind", f"expected answer, label or undo, got {kind!r}")
        log.labels = list(standing.values())
        return log

    def labelled(self) -> list[LabelledRecord]:  # type: ignore[override]
        """Every up or down first label as a training row (``labelled_of``); skips and repeats are none."""
        return [labelled_of(self.items[t.item], t) for by_item in self.first_labels().values()
                for t in by_item.values() if t.decided and t.item in self.items]

    def pairs(self) -> list[Any]:
        return []


def labelled_of(answer: Answer, thumb: Thumb) -> LabelledRecord:
    meta = {**answer.meta, "item": answer.id, "labelled_by": "human", "rater": thumb.rater, "time": thumb.time,
            "seconds": thumb.seconds, "label_source": thumb.source}
    return LabelledRecord(id=stable_id("thumbs", answer.id, thumb.rater), prompt=answer.prompt,
                          completion=answer.completion, label=thumb.verdict == "up", meta=meta)


# ------------------------------------------------------------------------------------------------- input

def answers_of(src: str, line: int, row: Any) -> list[tuple[str, Prompt, dict[str, Any], bool | None]]:
    """``(completion, prompt, meta, label the input gave)`` for each answer in one row: a ``{prompt,
    completion, label?}`` row (the score strategy's output, to check its labels), or any row ``prefloop label``
    compares (candidates, the rank strategy's pairs, a pairs file: its chosen side counts as up)."""
    from judge.comparisons import PROMPT_META, candidates_of

    if isinstance(row, dict) and "completion" in row:
        given = row.get("label")
        (rec,) = to_labelled(src, line, row if given is not None else {**row, "label": True})
        meta = {k: rec.meta[k] for k in PROMPT_META if k in rec.meta}
        return [(rec.completion.strip(), rec.prompt, meta, rec.label if given is not None else None)]
    _, prompt, answers, meta = candidates_of(src, line, row)
    chosen = meta.pop("input_chosen", None)
    meta.pop("candidate_models", None)
    return [(text, prompt, meta, (i == 0) if chosen else None) for i, text in enumerate(answers)]


def load_answers(source: str | Path, *, limit: int = 0) -> tuple[list[Answer], LoadReport]:
    """Every answer in ``source`` (the first ``limit`` rows when > 0), each once; bad rows raise ``DataError``
    naming file, line and field."""
    report = LoadReport(source=str(source))
    answers: list[Answer] = []
    seen: set[str] = set()
    for n, (src, line, row) in enumerate(iter_rows(source)):
        if limit and n >= limit:
            break
        try:
            got = answers_of(src, line, row)
        except RecordError as err:
            report.errors.append(err)
            continue
        for text, prompt, meta, given in got:
            if not text:
                report.dropped["empty answer"] += 1
                continue
            answer = Answer(id=stable_id("answer", prompt, text), prompt=prompt, completion=text,
                            meta={**meta, "source": f"{src}:{line}"})
            if given is not None:
                answer.meta["input_label"] = given
            if answer.id in seen:
                report.dropped["the same answer twice"] += 1
                continue
            seen.add(answer.id)
            answers.append(answer)
    report.kept = len(answers)
    if report.errors:
        raise DataError(report.errors)
    if not answers:
        raise DataError([RecordError(str(source), None, None, "no answers in it (rows need 'completion', "
                                                                "'answers', or 'chosen' and 'rejected')")])
    return answers, report


# ------------------------------------------------------------------------------------------------- screen

class ThumbSession(Session):
    """The deck behind the thumbs screen: ``Session``'s order, resume, undo and pace; one answer per screen."""

    def current(self) -> Any:
        from prefloop.screen import ShownOne

        i = self._on_screen()
        if i is None:
            return None
        answer = self.slots[i].item
        return ShownOne(heading=self.heading.format(n=i + 1, total=len(self.slots)), prompt=shown_prompt(answer),
                        answer=answer.completion)

    def choose(self, choice: str) -> None:
        i = self._next()
        if i is None:
            return
        slot = self.slots[i]
        if choice not in THUMBS:
            raise ValueError(f"a thumbs label is up, down or skip, got {choice!r}")
        stamp = now_iso()
        self._given(slot, Thumb(id=stable_id("thumb", slot.item.id, self.rater, slot.repeat, stamp, time.time_ns()),
                                item=slot.item.id, rater=self.rater, verdict=choice, key=choice,  # type: ignore
                                repeat=slot.repeat, time=stamp, seconds=self._seconds_shown(i)))


# ------------------------------------------------------------------------------------------------- result

@dataclass
class ThumbsResult(LabelResult):
    """``LabelResult`` for single answers: ``items`` are answers, and the output holds labelled rows."""

    mode: str = "thumbs"
    desirable: int = 0
    undesirable: int = 0


def write_labelled(log: ThumbLog, output: str | Path) -> list[LabelledRecord]:
    """Rebuild the output from the log (a whole-file atomic write: the log is the record, this is its view)."""
    rows = log.labelled()
    write_jsonl(output, [r.to_json() for r in rows])
    return rows


def keep_labelled(path: Path, output: str | Path, answer: Answer | None, thumb: Thumb, undone: bool) -> None:
    """Keep the output in step with the log: an up or down label is one appended row, an undo rebuilds it."""
    if not (thumb.decided and not thumb.repeat):
        return
    if undone or answer is None:
        write_labelled(ThumbLog.read(path), output)
        return
    with JsonlAppender(output) as out:
        out.append(labelled_of(answer, thumb).to_json())


def summarize(log: ThumbLog, output: str | Path, rater: str, answers: list[Answer], status: str,
              reason: str = "") -> ThumbsResult:
    firsts = log.first_labels()
    mine = firsts.get(rater, {})
    every = [t for by_item in firsts.values() for t in by_item.values()]
    rows = log.labelled()
    checked: dict[str, Any] = {}
    for who, by_item in firsts.items():
        known = [(t, log.items[t.item].meta["input_label"]) for t in by_item.values()
                 if t.decided and t.item in log.items and "input_label" in log.items[t.item].meta]
        if known:
            checked[who] = {"n": len(known), "same": sum((t.verdict == "up") == g for t, g in known) / len(known)}
    return ThumbsResult(status=status, reason=reason,  # type: ignore[arg-type]
                        outputs={"labelled": str(output), "labels": str(log_path(output))},
                        output=str(output), log=str(log_path(output)), rater=rater, items=len(answers),
                        labelled=sum(a.id in mine for a in answers), desirable=sum(r.label for r in rows),
                        undesirable=sum(not r.label for r in rows),
                        skips=sum(t.verdict == "skip" for t in every),
                        repeats=sum(t.repeat for t in log.labels), undone=log.undone,
                        per_rater={who: len(by_item) for who, by_item in firsts.items()},
                        agreement=rater_agreement(log), consistency=self_consistency(log), input_agreement=checked)


def label_thumbs(cfg: LabelConfig, play: Play | None = None) -> ThumbsResult:
    """Mark each answer in ``cfg.source`` up or down into ``cfg.output``; see the module docstring."""
    answers, report = load_answers(cfg.source, limit=cfg.limit)
    path = log_path(cfg.output)
    slots = plan(answers, cfg.seed, cfg.repeats)  # type: ignore[arg-type]  (plan reads only ids)
    log, status, reason = run_session(
        cfg.output, ThumbLog.read, write_labelled,
        lambda log, writer: ThumbSession(slots, log, writer, cfg.who, cfg.seed, heading="answer {n} of {total}",
                                         on_label=lambda a, t, undone: keep_labelled(path, cfg.output, a, t, undone)),
        screen_for, play, report.dropped)
    result = summarize(log, cfg.output, cfg.who, answers, status, reason)
    save(result)
    return result


def screen_for(session: ThumbSession) -> Any:
    try:
        from prefloop.screen import ThumbsApp
    except ImportError:
        raise NeedsTerminal("the labelling screen needs textual: pip install 'prefloop[label]'") from None
    return ThumbsApp(session, title="prefloop label: thumbs")


def print_summary(r: ThumbsResult, console: Any) -> None:
    from prefloop.report import fmt, pct

    state = "finished" if r.complete else "stopped"
    console.print(f"[bold]label {state}[/bold]: {r.labelled} of {r.items} answers marked by {r.rater}"
                  + (f" ({r.reason})" if r.reason else ""))
    console.print(f"  {r.desirable} desirable and {r.undesirable} undesirable answers in {r.output}; {r.skips} skips "
                  f"are recorded in {Path(r.log).name} but never become rows"
                  + (f"; {r.undone} labels undone" if r.undone else ""))
    for a in r.agreement:
        console.print(f"  agreement {a.a} vs {a.b}: Cohen's κ {fmt(a.kappa)}, same mark {pct(a.agreement)} (n {a.n})")
    for c in r.consistency:
        console.print(f"  self-consistency of {c.rater}: {pct(c.same)} of {c.n} hidden repeats got the same mark")
    for who, got in r.input_agreement.items():
        console.print(f"  {who} agrees with the input's label on {pct(got['same'])} of {got['n']} answers")
    if r.desirable or r.undesirable:
        console.print(f"  next: prefloop train --objective kto --data {r.output} --model MODEL -o runs/kto")
