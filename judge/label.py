"""``prefloop label``: a person picks the better answer in the terminal; the result is preference pairs.

The plain path: load the items to compare (``judge.comparisons``) -> lock the output -> read its label log
(``judge.labels``) -> show the first item this rater has not labelled (``prefloop.screen``) -> every key is one
line appended and flushed to the log, and a decided label one pair appended to the pairs file (an undo rebuilds
it from the log) -> a summary (pairs, ties, skips, agreement between raters, self-consistency) printed and saved
beside the output.

Durable like the generator: ``kill -9`` or a closed terminal loses at most the item on screen; the same command
resumes at the first unlabelled item, and ``u`` undoes the last label also after a restart. Left and right are
shuffled per item and rater from the seed. Hidden repeats (``repeats``) come back ``REPEAT_GAP`` items later with
the sides swapped; they measure self-consistency and are never training pairs.

``Session`` is the deck the screen shows; the human judge (``judge.human``) uses the same one.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from judge.config import LabelConfig
from judge.labels import (Consistency, Item, Label, LabelLog, LabelWriter, RaterAgreement, pair_of, rater_agreement,
                          self_consistency)
from judge.prompts import judge_prompt_text
from prefloop.errors import BadInput
from prefloop.files import Lock, same_file
from prefloop.jsonl import JsonlAppender, write_jsonl
from prefloop.records import stable_id
from prefloop.stage import StageResult

REPEAT_GAP = 7  # a hidden repeat comes back this many items later: too far to remember which side won

Play = Callable[[Any], Awaitable[Any]]   # runs the screen (a textual App) to its end and returns its exit value


class NeedsTerminal(BadInput, RuntimeError):
    """Asking a person needs an interactive terminal."""


def screen_for(session: "Session", title: str) -> Any:
    """The labelling screen over ``session`` (textual is imported here, and only here)."""
    try:
        from prefloop.screen import CompareApp
    except ImportError:
        raise NeedsTerminal("the labelling screen needs textual: pip install 'prefloop[label]'") from None
    return CompareApp(session, title=title)


async def play_in_terminal(app: Any) -> Any:
    """Run the screen in this terminal."""
    # textual draws on stderr and reads the terminal's size from stdout: all three must be the terminal
    if not all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr)):
        raise NeedsTerminal("a person labels in an interactive terminal, and stdin, stdout or stderr is not one; "
                            "run the command in a terminal without redirecting it (labels given elsewhere can be "
                            "imported: prefloop label --import)")
    return await app.run_async()


@dataclass
class Slot:
    item: Item
    repeat: bool = False

    @property
    def key(self) -> tuple[str, bool]:
        return self.item.id, self.repeat


def plan(items: list[Item], seed: int, repeats: float) -> list[Slot]:
    """The order items are shown in: the input order, with the hidden repeats (a seeded share of the items)
    slotted in ``REPEAT_GAP`` items after their first showing."""
    chosen = set(random.Random(stable_id("repeats", seed)).sample(range(len(items)), round(len(items) * repeats)))
    slots: list[Slot] = []
    due: list[tuple[int, Slot]] = []
    for i, item in enumerate(items):
        slots.append(Slot(item))
        if i in chosen:
            due.append((len(slots) + REPEAT_GAP, Slot(item, repeat=True)))
        while due and due[0][0] <= len(slots):
            slots.append(due.pop(0)[1])
    return slots + [slot for _, slot in due]


def left_side(seed: int, item: str, rater: str, repeat: bool) -> str:
    """The answer (``a`` or ``b``) shown on the left: a coin per item and rater; a repeat shows the other one."""
    first = "a" if random.Random(stable_id("left", seed, item, rater)).random() < 0.5 else "b"
    return ("b" if first == "a" else "a") if repeat else first


def shown_prompt(item: Item) -> str:
    """The task as a person reads it: an Alpaca prompt as its instruction and input, without the template's
    preamble; anything else as a judge reads it."""
    if item.meta.get("prompt_format") == "alpaca" and item.meta.get("instruction"):
        return "\n\n".join(t for t in (item.meta["instruction"], item.meta.get("input") or "") if t.strip())
    return judge_prompt_text(item.prompt)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Session:
    """The deck behind the screen: which item is next, what a key means, and writing it down at once."""

    def __init__(self, slots: list[Slot], log: LabelLog, writer: LabelWriter, rater: str, seed: int, *,
                 heading: str = "item {n} of {total}", on_label: Callable[[Item | None, Label, bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.slots, self.writer, self.rater, self.seed = slots, writer, rater, seed
        self.heading, self.on_label, self.clock = heading, on_label, clock
        mine = log.of(rater)
        self.done = {(label.item, label.repeat) for label in mine}
        self.history = [label for label in mine if label.source == "terminal"]   # what `u` takes back, in order
        self.given = self.undone = 0
        self.started = clock()
        self._shown: tuple[int, float] | None = None

    def _next(self) -> int | None:
        return next((i for i, slot in enumerate(self.slots) if slot.key not in self.done), None)

    @property
    def finished(self) -> bool:
        return self._next() is None

    def _sides(self, slot: Slot) -> tuple[str, str]:
        left = left_side(self.seed, slot.item.id, self.rater, slot.repeat)
        return left, "b" if left == "a" else "a"

    def _on_screen(self) -> int | None:
        """The next slot to show, timed from the first time it is shown (None: the deck is done)."""
        i = self._next()
        if i is not None and (self._shown is None or self._shown[0] != i):
            self._shown = (i, self.clock())
        return i

    def _seconds_shown(self, i: int) -> float:
        shown_at = self._shown[1] if self._shown and self._shown[0] == i else self.clock()
        return round(self.clock() - shown_at, 2)

    def _given(self, slot: Slot, label: Any) -> None:
        """A label given to ``slot`` (a ``Label``, or a ``judge.thumbs.Thumb``): written, counted, undoable."""
        self.writer.label(slot.item, label)
        self.done.add(slot.key)
        self.history.append(label)
        self.given += 1
        self._shown = None
        if self.on_label is not None:
            self.on_label(slot.item, label, False)

    def current(self) -> Any:
        from prefloop.screen import Shown

        i = self._on_screen()
        if i is None:
            return None
        slot = self.slots[i]
        left, right = self._sides(slot)
        heading = self.heading.format(n=i + 1, total=len(self.slots))   # repeats count as items: not announced
        return Shown(heading=heading, prompt=shown_prompt(slot.item), left=slot.item.text(left),
                     right=slot.item.text(right))

    def choose(self, choice: str) -> None:
        i = self._next()
        if i is None:
            return
        slot = self.slots[i]
        left, right = self._sides(slot)
        verdict = {"left": left, "right": right, "tie": "tie", "skip": "skip"}[choice]
        stamp = now_iso()
        self._given(slot, Label(id=stable_id("label", slot.item.id, self.rater, slot.repeat, stamp, time.time_ns()),
                                item=slot.item.id, rater=self.rater, verdict=verdict, left=left,  # type: ignore
                                key=choice, repeat=slot.repeat, time=stamp, seconds=self._seconds_shown(i)))

    def undo(self) -> bool:
        if not self.history:
            return False
        label = self.history.pop()
        self.writer.undo(self.rater, label.id, now_iso())
        self.done.discard((label.item, label.repeat))
        self.undone += 1
        self._shown = None
        if self.on_label is not None:
            self.on_label(None, label, True)
        return True

    def counts(self) -> tuple[int, int]:
        """(slots labelled, slots in all) for this rater."""
        return sum(slot.key in self.done for slot in self.slots), len(self.slots)

    def progress(self) -> str:
        done, total = self.counts()
        minutes = (self.clock() - self.started) / 60
        if self.given and minutes > 0:
            rate = self.given / minutes
            left = (total - done) / rate
            pace = f"{rate:.1f} labels/min · about {left:.0f} min left" if left >= 1 else \
                f"{rate:.1f} labels/min · under a minute left"
        else:
            pace = "pace after your first label"
        return f"{done} / {total} labelled · {pace} · rater {self.rater}"


# ------------------------------------------------------------------------------------------------- result

@dataclass
class LabelResult(StageResult):
    """What the output's label log holds after this run (saved as ``OUTPUT.summary.json``)."""

    output: str = ""
    log: str = ""
    mode: str = "screen"             # or "import"
    rater: str = ""
    items: int = 0                   # comparisons in the input
    labelled: int = 0                # of them, labelled by this rater (skips included)
    pairs: int = 0                   # training pairs in the output, every rater
    ties: int = 0                    # first labels that were ties (every rater): never pairs
    skips: int = 0
    repeats: int = 0                 # hidden repeats answered
    undone: int = 0
    imported: int = 0
    per_rater: dict[str, int] = field(default_factory=dict)
    agreement: list[RaterAgreement] = field(default_factory=list)
    consistency: list[Consistency] = field(default_factory=list)
    input_agreement: dict[str, Any] = field(default_factory=dict)   # rater -> {n, same}: a pairs file checked


def log_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".labels.jsonl")


def summary_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".summary.json")


def write_pairs(log: LabelLog, output: str | Path) -> int:
    """Rebuild the pairs file from the log (a whole-file atomic write: the log is the record, this is its view)."""
    pairs = log.pairs()
    write_jsonl(output, [p.to_json() for p in pairs])
    return len(pairs)


def keep_pairs(path: Path, output: str | Path, item: Item | None, label: Label, undone: bool) -> None:
    """Keep the pairs file in step with the log after one event: a new decided label is one appended pair (a
    flushed line, like the log's); taking one back rebuilds the file from the log. Ties, skips and repeats change
    no pair. (Rebuilding after every label took 0.25 s per key at 2,000 labels of 1 kB answers; an append takes
    well under a millisecond.)"""
    if not (label.decided and not label.repeat):
        return
    if undone or item is None:
        write_pairs(LabelLog.read(path), output)
        return
    with JsonlAppender(output) as out:
        out.append(pair_of(item, label).to_json())


def summarize(log: LabelLog, output: str | Path, rater: str, items: list[Item], status: str, reason: str = ""
              ) -> LabelResult:
    firsts = log.first_labels()
    mine = firsts.get(rater, {})
    every = [label for by_item in firsts.values() for label in by_item.values()]
    checked: dict[str, Any] = {}
    for who, by_item in firsts.items():
        known = [(label, log.items[label.item].meta["input_chosen"]) for label in by_item.values()
                 if label.decided and label.item in log.items and "input_chosen" in log.items[label.item].meta]
        if known:
            checked[who] = {"n": len(known), "same": sum(label.verdict == c for label, c in known) / len(known)}
    return LabelResult(status=status, reason=reason,  # type: ignore[arg-type]
                       outputs={"pairs": str(output), "labels": str(log_path(output))},
                       output=str(output), log=str(log_path(output)), rater=rater, items=len(items),
                       labelled=sum(item.id in mine for item in items), pairs=len(log.pairs()),
                       ties=sum(label.verdict == "tie" for label in every),
                       skips=sum(label.verdict == "skip" for label in every),
                       repeats=sum(label.repeat for label in log.labels), undone=log.undone,
                       per_rater={who: len(by_item) for who, by_item in firsts.items()},
                       agreement=rater_agreement(log), consistency=self_consistency(log), input_agreement=checked)


def run_session(output: str | Path, read_log: Callable[[Path], Any], rewrite: Callable[[Any, str | Path], Any],
                session_for: Callable[[Any, LabelWriter], Any], screen: Callable[[Any], Any], play: Play | None,
                dropped: dict[str, int]) -> tuple[Any, str, str]:
    """One labelling session into ``output``, pairs or thumbs alike: under the output's lock, the log read and the
    output rebuilt from it (a run killed between a label and its row is caught up), the screen played until done or
    quit, and the output rebuilt again. Returns the log, the status and the reason (what is left, what was dropped)."""
    path = log_path(output)
    with Lock(output):
        log = read_log(path)
        rewrite(log, output)
        with LabelWriter(path, log) as writer:
            session = session_for(log, writer)
            if not session.finished:
                asyncio.run((play or play_in_terminal)(screen(session)))
            done, total = session.counts()
        log = read_log(path)
        rewrite(log, output)
    status, reason = ("complete", "") if done == total else \
        ("interrupted", f"{total - done} of {total} left; run the same command again to resume")
    notes = [reason] if reason else []
    notes += [f"input: {n} dropped ({why})" for why, n in dropped.items()]
    return log, status, "; ".join(notes)


def label(cfg: LabelConfig, console: Any = None, play: Play | None = None) -> LabelResult:
    """Label ``cfg.source`` into ``cfg.output`` (``cfg.import_labels``: import instead); see the module docstring.
    ``play`` runs the screen (default: this terminal; tests drive it headless)."""
    from judge.comparisons import load_items

    if cfg.mode == "thumbs":
        raise ValueError("label.mode = \"thumbs\" marks single answers: that is judge.thumbs.label_thumbs, not this "
                         "pairwise labeller")
    if cfg.import_labels:
        return import_into(cfg)
    items, report = load_items(cfg.source, max_pairs=cfg.max_pairs, seed=cfg.seed, limit=cfg.limit)
    path = log_path(cfg.output)
    log, status, reason = run_session(
        cfg.output, LabelLog.read, write_pairs,
        lambda log, writer: Session(plan(items, cfg.seed, cfg.repeats), log, writer, cfg.who, cfg.seed,
                                    on_label=lambda item, lab, undone: keep_pairs(path, cfg.output, item, lab,
                                                                                  undone)),
        lambda session: screen_for(session, "prefloop label"), play, report.dropped)
    result = summarize(log, cfg.output, cfg.who, items, status, reason)
    save(result)
    return result


def import_into(cfg: LabelConfig) -> LabelResult:
    """``--import``: append the file's labels to the output's log (those not imported before), rebuild the pairs."""
    from judge.imports import read_import

    if same_file(cfg.import_labels, cfg.output):
        raise ValueError(f"--output {cfg.output} is the --import file {cfg.import_labels}: the pairs would replace "
                         "your labels; choose another --output")
    got = read_import(cfg)
    path = log_path(cfg.output)
    added = 0
    with Lock(cfg.output):
        log = LabelLog.read(path)
        known = {label.id for label in log.labels}
        with LabelWriter(path, log) as writer:
            for item, label in got:
                if label.id not in known:
                    writer.label(item, label)
                    known.add(label.id)
                    added += 1
        log = LabelLog.read(path)
        write_pairs(log, cfg.output)
    items = list({item.id: item for item, _ in got}.values())
    result = summarize(log, cfg.output, cfg.who, items, "complete")
    result.mode, result.imported, result.labelled = "import", added, len(got)
    save(result)
    return result


def save(result: LabelResult) -> None:
    from prefloop.files import atomic_write_json

    atomic_write_json(summary_path(result.output), result.to_json())


def print_summary(r: LabelResult, console: Any) -> None:
    from prefloop.report import fmt, pct

    if r.mode == "import":
        console.print(f"[bold]imported[/bold] {r.labelled} labels on {r.items} comparisons ({r.imported} new) "
                      f"into {r.log}")
    else:
        state = "finished" if r.complete else "stopped"
        console.print(f"[bold]label {state}[/bold]: {r.labelled} of {r.items} comparisons labelled by {r.rater}"
                      + (f" ({r.reason})" if r.reason else ""))
    console.print(f"  {r.pairs} training pairs in {r.output}; {r.ties} ties and {r.skips} skips are recorded in "
                  f"{Path(r.log).name} but never become pairs"
                  + (f"; {r.undone} labels undone" if r.undone else ""))
    for a in r.agreement:
        console.print(f"  agreement {a.a} vs {a.b}: Cohen's κ {fmt(a.kappa)}, same verdict {pct(a.agreement)}, "
                      f"ties {pct(a.tie_share)} of their labels (n {a.n})")
    for c in r.consistency:
        console.print(f"  self-consistency of {c.rater}: {pct(c.same)} of {c.n} hidden repeats got the same verdict")
    for who, got in r.input_agreement.items():
        console.print(f"  {who} agrees with the input's chosen answer on {pct(got['same'])} of {got['n']} pairs")
    if r.pairs:
        console.print(f"  next: prefloop train --data {r.output} --model MODEL -o runs/dpo")
