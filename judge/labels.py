"""A person's verdicts, as an append-only log: what ``prefloop label``, the importers and the human judge write.

Each line of ``LOG`` (crash-safe JSONL, one write and flush per line) is one event:

- ``{"kind": "item", "item", "prompt", "a", "b", "meta"}``: what was compared, written once per item before its
  first label, so the log alone says which answer a verdict preferred (``a``/``b`` name answers, not sides);
- ``{"kind": "label", "id", "item", "rater", "verdict", "left", "key", "repeat", "time", "seconds", "source"}``:
  ``verdict`` is ``a``, ``b``, ``tie`` or ``skip``; ``left`` is the answer that was shown on the left;
  ``repeat`` marks a hidden repeat (it measures self-consistency and never becomes a training pair);
- ``{"kind": "undo", "id", "rater", "undoes", "time"}``: takes the label ``undoes`` back.

Nothing is ever rewritten: an undo is one more line, so a crash, a restart or an undo after a restart all leave a
log that reads back to the same labels. Logs from different raters can be concatenated: every event names its
rater and item. Ties and skips are kept (counted, and compared between raters) but never become training pairs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from judge.stats import cohen_kappa
from prefloop.jsonl import JsonlAppender, iter_jsonl
from prefloop.records import PreferenceRecord, Prompt, RecordError, stable_id
from prefloop.stage import from_fields

Verdict = Literal["a", "b", "tie", "skip"]
VERDICTS = ("a", "b", "tie", "skip")


@dataclass
class Item:
    """Two answers to one prompt; ``a`` and ``b`` are fixed by content (which is shown left is per label)."""

    id: str
    prompt: Prompt
    a: str
    b: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, prompt: Prompt, x: str, y: str, meta: dict[str, Any] | None = None) -> tuple["Item", bool]:
        """The item comparing ``x`` and ``y``, its answers in one canonical order (by text), so the same
        comparison from any source is the same item; the flag says ``x`` became ``b``."""
        flipped = y < x
        a, b = (y, x) if flipped else (x, y)
        return cls(id=stable_id("compare", prompt, a, b), prompt=prompt, a=a, b=b, meta=dict(meta or {})), flipped

    def to_json(self) -> dict[str, Any]:
        return {"kind": "item", "item": self.id, "prompt": self.prompt, "a": self.a, "b": self.b, "meta": self.meta}

    def text(self, side: str) -> str:
        return self.a if side == "a" else self.b


@dataclass
class Label:
    """One verdict by one rater on one item."""

    id: str
    item: str
    rater: str
    verdict: Verdict
    left: str | None = "a"        # the answer shown on the left (None: not known, e.g. an Argilla ranking)
    key: str = ""                 # the key pressed, or the label as the imported file wrote it
    repeat: bool = False
    time: str = ""
    seconds: float | None = None  # from showing the item to the key press
    source: str = "terminal"      # or the imported file:line

    @property
    def decided(self) -> bool:
        return self.verdict in ("a", "b")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "label", **dataclasses.asdict(self)}


@dataclass
class LabelLog:
    """A log as read back: its items and the labels still standing (undone ones removed), in log order."""

    items: dict[str, Item] = field(default_factory=dict)
    labels: list[Label] = field(default_factory=list)
    undone: int = 0

    @classmethod
    def read(cls, path: str | Path) -> "LabelLog":
        """Read and fold ``path`` (a torn last line from a killed run is skipped); a bad line names its line."""
        log = cls()
        path = Path(path)
        if not path.exists():
            return log
        standing: dict[str, Label] = {}
        for line, obj in iter_jsonl(path):
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind == "item":
                log.items.setdefault(str(obj["item"]), Item(id=str(obj["item"]), prompt=obj["prompt"], a=obj["a"],
                                                             b=obj["b"], meta=obj.get("meta") or {}))
            elif kind == "label":
                label = from_fields(Label, obj)
                if label.verdict not in VERDICTS:
                    raise RecordError(str(path), line, "verdict", f"{label.verdict!r} is not one of a, b, tie, skip")
                standing.setdefault(label.id, label)
            elif kind == "undo":
                log.undone += standing.pop(str(obj.get("undoes")), None) is not None
            else:
                raise RecordError(str(path), line, "kind", f"expected item, label or undo, got {kind!r}")
        log.labels = list(standing.values())
        return log

    def of(self, rater: str) -> list[Label]:
        return [label for label in self.labels if label.rater == rater]

    def raters(self) -> list[str]:
        return list(dict.fromkeys(label.rater for label in self.labels))

    def first_labels(self) -> dict[str, dict[str, Label]]:
        """``{rater: {item: label}}``: each rater's first standing label of each item (hidden repeats left out)."""
        out: dict[str, dict[str, Label]] = {}
        for label in self.labels:
            if not label.repeat:
                out.setdefault(label.rater, {}).setdefault(label.item, label)
        return out

    def pairs(self) -> list[PreferenceRecord]:
        """Every decided first label as a training pair (``pair_of``). Ties, skips and repeats are no pairs."""
        return [pair_of(self.items[label.item], label) for by_item in self.first_labels().values()
                for label in by_item.values() if label.decided and label.item in self.items]


def pair_of(item: Item, label: Label) -> PreferenceRecord:
    """A decided label as a training pair, ``meta`` saying who chose, when, how fast, and where the chosen answer
    was shown (``chosen_position``: left or right; None when the source did not say)."""
    other = "b" if label.verdict == "a" else "a"
    meta = {**item.meta, "item": item.id, "labelled_by": "human", "rater": label.rater, "time": label.time,
            "seconds": label.seconds, "label_source": label.source,
            "chosen_position": None if label.left is None else ("left" if label.left == label.verdict else "right")}
    return PreferenceRecord(id=stable_id("label", item.id, label.rater), prompt=item.prompt,
                            chosen=item.text(label.verdict), rejected=item.text(other), meta=meta)


class LabelWriter(JsonlAppender):
    """Appends events to a log, each flushed at once; an item is written once, before its first label."""

    def __init__(self, path: str | Path, known: LabelLog):
        super().__init__(path)
        self.known = set(known.items)

    def label(self, item: Item, label: Label) -> None:
        if item.id not in self.known:
            self.append(item.to_json())
            self.known.add(item.id)
        self.append(label.to_json())

    def undo(self, rater: str, label_id: str, time: str) -> None:
        self.append({"kind": "undo", "id": stable_id("undo", label_id, time), "rater": rater, "undoes": label_id,
                     "time": time})


# ------------------------------------------------------------------------------------------- agreement

@dataclass
class RaterAgreement:
    """Two raters over the items both labelled (skips left out): Cohen's κ on a/b/tie, raw agreement, ties."""

    a: str
    b: str
    n: int
    kappa: float | None
    agreement: float | None
    tie_share: float | None   # of both raters' labels on these items, the share that were ties


@dataclass
class Consistency:
    """One rater against themselves: hidden repeats (shown later, in the other order) given the same verdict."""

    rater: str
    n: int
    same: float | None


def rater_agreement(log: LabelLog) -> list[RaterAgreement]:
    firsts = {r: {k: v for k, v in items.items() if v.verdict != "skip"} for r, items in log.first_labels().items()}
    out = []
    for a, b in combinations(sorted(firsts), 2):
        common = sorted(set(firsts[a]) & set(firsts[b]))
        va = [firsts[a][k].verdict for k in common]
        vb = [firsts[b][k].verdict for k in common]
        n = len(common)
        out.append(RaterAgreement(a=a, b=b, n=n, kappa=cohen_kappa(va, vb) if n else None,
                                  agreement=sum(x == y for x, y in zip(va, vb)) / n if n else None,
                                  tie_share=(va + vb).count("tie") / (2 * n) if n else None))
    return out


def self_consistency(log: LabelLog) -> list[Consistency]:
    firsts = log.first_labels()
    out = []
    for rater in log.raters():
        repeats = {label.item: label for label in log.of(rater) if label.repeat and label.verdict != "skip"}
        both = [(firsts.get(rater, {}).get(item), again) for item, again in repeats.items()]
        both = [(first, again) for first, again in both if first is not None and first.verdict != "skip"]
        if both:
            out.append(Consistency(rater=rater, n=len(both),
                                   same=sum(f.verdict == g.verdict for f, g in both) / len(both)))
    return out
