"""Labels people already gave, read as the label log's items and labels (``judge.labels``), so ``prefloop label
--import`` adds them to a log like labels given on the screen.

Three formats (``--format``, or ``auto``: told from the first row):

- ``ab``: CSV, JSONL or a JSON array with ``prompt, answer_a, answer_b, label`` (``label`` A, B, tie or skip, any
  case) and an optional ``rater``; every column name is settable. Answer A counts as the one shown on the left.
- ``labelstudio``: Label Studio's JSON export of a project with the ``Pairwise`` tag: one task per row with
  ``data`` (the prompt and the two texts; defaults ``prompt``, ``text1``, ``text2``: the pairwise template's
  names, the first being the left one) and ``annotations``, each with ``completed_by`` and a ``result`` whose
  ``pairwise`` entry holds ``value.selected`` = ``left`` or ``right``. A cancelled annotation is a skip; the
  annotation's ``created_at`` and ``lead_time`` become the label's time and seconds.
- ``argilla``: records of a dataset with a ``RankingQuestion`` (default name ``ranking``) over text fields, as
  Argilla 2 exports them (``records.to_json``/``to_list``: ``fields`` and ``responses: {question: [{value,
  user_id}]}``; flattened or ``to_datasets``/Hub: ``QUESTION.responses``, ``.responses.users``,
  ``.responses.status``) or as Argilla 1's FeedbackDataset did (``QUESTION: [{user_id, value: [{value, rank}],
  status}]``). A ranking's value names fields (``response-1`` also finds field ``response_1``); its best and worst
  become the pair, and equal ranks a tie.

A bad row fails with file, line and field, as every other input does. Importing the same file again adds nothing:
each label's id comes from the file name, the row and the rater. A discarded or draft Argilla response is no
label.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator

from judge.config import LabelConfig
from judge.labels import Item, Label
from prefloop.records import RecordError, stable_id
from prefloop.sources import DataError, iter_rows

AB_VERDICT = {"a": "a", "b": "b", "tie": "tie", "skip": "skip"}
Row = tuple[str, int, Any]


def rows_of(path: Path) -> Iterator[Row]:
    """CSV through the csv module (the line a row starts on, every cell a string); everything else as the data
    sources read it."""
    if path.suffix.lower() != ".csv":
        yield from iter_rows(path)
        return
    start = 1
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:  # reads the header, so line numbers count from the file's first line
                return
            start = reader.line_num + 1
            for row in reader:
                yield str(path), start, row
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DataError([RecordError(str(path), start, None, f"not UTF-8 text (byte {exc.start}); is it a CSV? "
                                                             "save it as UTF-8 CSV")]) from None
    except csv.Error as exc:
        raise DataError([RecordError(str(path), start, None, f"not a readable CSV ({exc})")]) from None


def detect(path: Path) -> str:
    first = next((row for _, _, row in rows_of(path)), None)
    if isinstance(first, dict) and "annotations" in first and "data" in first:
        return "labelstudio"
    if isinstance(first, dict) and ("responses" in first or any(str(k).endswith(".responses") for k in first)
                                    or any(isinstance(v, list) and v and isinstance(v[0], dict) and "user_id" in v[0]
                                           for v in first.values())):
        return "argilla"
    return "ab"


def text_field(src: str, line: int, row: Any, key: str) -> str:
    if not isinstance(row, dict) or row.get(key) is None:
        found = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
        raise RecordError(src, line, key, f"missing (found: {found}); name the column with the --*-column flags")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise RecordError(src, line, key, "expected a non-empty string")
    return value


def label_id(path: Path, line: int, rater: str, *extra: Any) -> str:
    return stable_id("import", path.name, line, rater, *extra)


Pairs = list[tuple[Item, Label]]


def ab_row(path: Path, cfg: LabelConfig, src: str, line: int, row: Any) -> Pairs:
    p, a, b = cfg.prompt_column or "prompt", cfg.a_column or "answer_a", cfg.b_column or "answer_b"
    lab = cfg.label_column or "label"
    prompt, x, y = (text_field(src, line, row, k) for k in (p, a, b))
    raw = row.get(lab)
    verdict = AB_VERDICT.get(str(raw).strip().lower()) if raw is not None else None
    if verdict is None:
        raise RecordError(src, line, lab, f"{raw!r} is not A, B, tie or skip")
    if verdict in ("a", "b") and x.strip() == y.strip():
        raise RecordError(src, line, b, f"the same text as {a}: a pick between identical answers teaches nothing")
    rater = str(row.get(cfg.rater_column) or cfg.who)
    item, flipped = Item.of(prompt, x, y, {"source": f"{src}:{line}"})
    return [(item, Label(id=label_id(path, line, rater), item=item.id, rater=rater, left="b" if flipped else "a",
                         verdict=_flip(verdict, flipped), key=str(raw), source=f"{src}:{line}"))]  # type: ignore


def _flip(verdict: str, flipped: bool) -> str:
    return {"a": "b", "b": "a"}.get(verdict, verdict) if flipped else verdict


def _rater(who: Any) -> str:
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id") or who.get("username") or "?")
    return "?" if who is None else str(who)


def labelstudio_row(path: Path, cfg: LabelConfig, src: str, line: int, task: Any) -> Pairs:
    p, a, b = cfg.prompt_column or "prompt", cfg.a_column or "text1", cfg.b_column or "text2"
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise RecordError(src, line, "data", "missing: expected a Label Studio task with 'data'")
    prompt, left, right = (text_field(src, line, data, k) for k in (p, a, b))
    item, flipped = Item.of(prompt, left, right, {"source": f"{src}:{line}", "task": task.get("id")})
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise RecordError(src, line, "annotations", "expected a list")
    out: Pairs = []
    for k, ann in enumerate(annotations):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise RecordError(src, line, where, "expected an object")
        picks = [(r.get("value") or {}).get("selected") for r in ann.get("result") or []
                 if isinstance(r, dict) and (r.get("type") == "pairwise" or "selected" in (r.get("value") or {}))]
        if ann.get("was_cancelled") or not picks or picks[0] in (None, "none"):
            verdict = "skip"
        elif picks[0] in ("left", "right"):
            verdict = _flip("a" if picks[0] == "left" else "b", flipped)
        else:
            raise RecordError(src, line, f"{where}.result.value.selected", f"{picks[0]!r} is not left or right")
        rater = _rater(ann.get("completed_by"))
        out.append((item, Label(id=label_id(path, line, rater, ann.get("id", k)), item=item.id, rater=rater,
                                verdict=verdict, left="b" if flipped else "a",  # type: ignore[arg-type]
                                key=str(picks[0] if picks else ""), time=str(ann.get("created_at") or ""),
                                seconds=ann.get("lead_time"), source=f"{src}:{line}")))
    return out


def _responses(src: str, line: int, row: dict, q: str) -> list[tuple[str, str | None, Any]]:
    """``(user, status, value)`` of every response to question ``q``, in any of Argilla's export shapes."""
    if isinstance(row.get("responses"), dict):                    # 2.x, nested
        got = row["responses"].get(q) or []
        return [(str(r.get("user_id")), r.get("status"), r.get("value")) for r in got if isinstance(r, dict)]
    if f"{q}.responses" in row:                                   # 2.x, flattened
        values = row.get(f"{q}.responses") or []
        users = row.get(f"{q}.responses.users") or ["?"] * len(values)
        status = row.get(f"{q}.responses.status") or [None] * len(values)
        return [(str(u), s, v) for v, u, s in zip(values, users, status)]
    if isinstance(row.get(q), list):                              # 1.x FeedbackDataset
        return [(str(r.get("user_id")), r.get("status"), r.get("value")) for r in row[q] if isinstance(r, dict)]
    raise RecordError(src, line, q, "no responses to this ranking question (name it with --label-column)")


def _ranks(src: str, line: int, where: str, value: Any) -> dict[str, int]:
    """Option -> rank (1 = best): 2.x writes the options best first, 1.x ``{value, rank}`` (equal ranks: a tie)."""
    if not isinstance(value, list) or len(value) < 2:
        raise RecordError(src, line, where, "expected a ranking of two or more options")
    if all(isinstance(v, str) for v in value):
        return {v: i + 1 for i, v in enumerate(value)}
    if all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in value):
        return {v["value"]: int(v["rank"]) if v.get("rank") is not None else i + 1 for i, v in enumerate(value)}
    raise RecordError(src, line, where, "expected option names, or {value, rank} objects")


def option_text(src: str, line: int, where: str, fields: dict, option: str) -> str:
    """The text a ranking option names: the field of that name (``-`` and ``_`` alike)."""
    for name in (option, option.replace("-", "_"), option.replace("_", "-")):
        if isinstance(fields.get(name), str) and fields[name].strip():
            return fields[name]
    raise RecordError(src, line, where, f"option {option!r} names no text field (fields: {', '.join(fields)})")


def argilla_row(path: Path, cfg: LabelConfig, src: str, line: int, row: Any) -> Pairs:
    q, p = cfg.label_column or "ranking", cfg.prompt_column or "prompt"
    if not isinstance(row, dict):
        raise RecordError(src, line, None, "expected an Argilla record (an object)")
    fields = row["fields"] if isinstance(row.get("fields"), dict) else row
    prompt = text_field(src, line, fields, p)
    out: Pairs = []
    for k, (user, status, value) in enumerate(_responses(src, line, row, q)):
        if status in ("draft", "discarded"):   # not an answer (yet): no label
            continue
        where = f"{q}.responses[{k}]"
        ranks = _ranks(src, line, where, value)
        order = sorted(ranks, key=lambda o: ranks[o])
        best, worst = (option_text(src, line, where, fields, o) for o in (order[0], order[-1]))
        verdict = "tie" if ranks[order[0]] == ranks[order[-1]] else "a"
        item, flipped = Item.of(prompt, best, worst, {"source": f"{src}:{line}", "record": row.get("id")})
        out.append((item, Label(id=label_id(path, line, user, k), item=item.id, rater=user, left=None,
                                verdict=_flip(verdict, flipped), key=str(value),  # type: ignore[arg-type]
                                source=f"{src}:{line}")))
    return out


READERS = {"ab": ab_row, "labelstudio": labelstudio_row, "argilla": argilla_row}


def read_import(cfg: LabelConfig) -> Pairs:
    """Every (item, label) of ``cfg.import_labels``; every bad row is collected into one ``DataError``."""
    path = Path(cfg.import_labels)
    if not path.exists():
        raise DataError([RecordError(str(path), None, None, "no such file")])
    fmt = detect(path) if cfg.import_format == "auto" else cfg.import_format
    out: Pairs = []
    errors: list[RecordError] = []
    for src, line, row in rows_of(path):
        try:
            out += READERS[fmt](path, cfg, src, line, row)
        except RecordError as err:
            errors.append(err)
    if errors:
        raise DataError(errors)
    if not out:
        raise DataError([RecordError(str(path), None, None, "no labels in it (no rows after the header); give the "
                                                            "file with your labels")])
    return out
