"""Read preference pairs and prompts from the formats users have.

Preference pairs: our JSONL (``id, prompt, chosen, rejected, meta``); TRL's standard (text columns) and
conversational (lists of ``{"role", "content"}``, with or without a separate ``prompt``) formats; JSON arrays of
Alpaca rows with ``chosen``/``rejected`` (the seed's ``instruction-data-with-preference.json`` loads as is); and
Hugging Face ``datasets`` (a ``save_to_disk`` folder, parquet/JSON/CSV files, or a Hub name when the Hub is
reachable).

Prompts: Alpaca JSON/JSONL (``instruction``, ``input``, ``output``), JSONL with ``prompt``, plain text (one prompt
per line) and the same Hugging Face sources.

Every bad record is reported with file, line and field. Pairs whose sides are identical carry no signal: they
are dropped and counted, not fatal.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from prefloop.errors import BadInput
from prefloop.jsonl import iter_jsonl
from prefloop.records import LabelledRecord, PreferenceRecord, PromptRecord, RecordError, stable_id
from prefloop.templates import alpaca_prompt

MAX_ERRORS_SHOWN = 20


@dataclass
class LoadReport:
    """What a load kept, dropped (with reasons) and found wrong."""

    source: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    errors: list[RecordError] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.kept} kept"]
        parts += [f"{n} dropped ({why})" for why, n in sorted(self.dropped.items())]
        if self.errors:
            parts.append(f"{len(self.errors)} bad")
        return f"{self.source}: " + ", ".join(parts)


class DataError(BadInput, ValueError):
    """One or more bad records; the message lists them (file:line: field 'x' problem)."""

    def __init__(self, errors: list[RecordError]):
        self.errors = errors
        shown = "\n  ".join(str(e) for e in errors[:MAX_ERRORS_SHOWN])
        more = f"\n  … and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        super().__init__(f"{len(errors)} bad record(s):\n  {shown}{more}")


# ----------------------------------------------------------------------------------------------- raw rows

def iter_rows(source: str | Path) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(source_name, line, row)`` from a file, a dataset folder or a Hub dataset name.

    ``line`` is the 1-based line for JSONL/text, the 1-based array position for a JSON array and the 1-based row
    for Hugging Face datasets.
    """
    path = Path(source)
    name = str(source)
    if path.is_dir():
        if not any(f.is_file() for f in path.rglob("*")):
            raise RecordError(name, None, None, "an empty folder; give a data file (.jsonl, .json, .csv, .parquet, "
                                                ".txt) or a folder holding one")
        yield from _iter_hf(name, _load_hf_dir(path))
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl" or suffix == ".ndjson":
            for lineno, obj in iter_jsonl(path, partial_tail_ok=False):
                yield name, lineno, obj
        elif suffix == ".json":
            yield from _iter_json(path)
        elif suffix in (".parquet", ".csv", ".arrow"):
            yield from _iter_hf(name, _load_hf_files(path))
        elif suffix in (".txt", ".text", ""):
            yield from _iter_text(path)
        else:
            raise RecordError(name, None, None, f"unknown file type '{suffix}' (expected .jsonl, .json, .txt, "
                                                ".parquet, .csv, or a dataset folder)")
    else:
        if "/" in name and not name.startswith((".", "/")) and not path.suffix:
            yield from _iter_hf(name, _load_hf_hub(name))
        else:
            raise RecordError(name, None, None, "no such file or folder")


def _iter_json(path: Path) -> Iterator[tuple[str, int, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(str(path), None, None, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(str(path), exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(data, dict):
        # {"data": [...]} / {"train": [...]} wrappers, or a single record
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise RecordError(str(path), None, None, "expected a JSON array of records")
    for i, row in enumerate(data):
        yield str(path), i + 1, row


def _iter_text(path: Path) -> Iterator[tuple[str, int, Any]]:
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise RecordError(str(path), lineno, None, f"not valid UTF-8 (byte {exc.start})") from None
        if line.strip():
            yield str(path), lineno, {"prompt": line.strip()}


def _load_hf_dir(path: Path) -> Any:
    import datasets

    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(str(path))
    else:
        ds = datasets.load_dataset(str(path))
    return _pick_split(ds)


def _load_hf_files(path: Path) -> Any:
    import datasets

    kind = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}[path.suffix.lower()]
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def _load_hf_hub(name: str) -> Any:
    import datasets

    spec, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(spec, split=split or None)
    except Exception as exc:  # offline, missing, private: say which and why
        raise RecordError(name, None, None, f"cannot load Hugging Face dataset: {exc}") from None
    return _pick_split(ds)


def _pick_split(ds: Any) -> Any:
    if hasattr(ds, "keys") and not hasattr(ds, "column_names") or isinstance(getattr(ds, "column_names", None), dict):
        splits = list(ds.keys())
        return ds["train"] if "train" in splits else ds[splits[0]]
    return ds


def _iter_hf(name: str, ds: Any) -> Iterator[tuple[str, int, Any]]:
    for i, row in enumerate(ds):
        yield name, i + 1, row


# ------------------------------------------------------------------------------------------ field checks

def _need_str(src: str, line: int, row: dict, key: str, *, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        raise RecordError(src, line, key, "missing")
    value = row[key]
    if not isinstance(value, str):
        raise RecordError(src, line, key, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RecordError(src, line, key, "empty")
    return value


def _messages(src: str, line: int, key: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RecordError(src, line, key, "expected a non-empty list of {role, content} messages")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError(src, line, f"{key}[{j}]", "expected {\"role\": str, \"content\": str}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _completion(src: str, line: int, row: dict, key: str) -> tuple[str, list[dict[str, str]] | None]:
    """A completion as text, plus the leading messages when it is a whole conversation (TRL implicit prompt)."""
    if key not in row or row[key] is None:
        raise RecordError(src, line, key, "missing")
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(src, line, key, "empty")
        return value, None
    msgs = _messages(src, line, key, value)
    if msgs[-1]["role"] != "assistant":
        raise RecordError(src, line, key, "last message must be the assistant's answer")
    if not msgs[-1]["content"].strip():
        raise RecordError(src, line, key, "empty")
    return msgs[-1]["content"], msgs[:-1]


# --------------------------------------------------------------------------------------------- records

def _alpaca(src: str, line: int, row: dict, meta: dict[str, Any]) -> str:
    """An Alpaca row's prompt (the recipe's template), with its fields kept in ``meta`` for other formats."""
    instruction = _need_str(src, line, row, "instruction")
    input_text = row.get("input") or ""
    if not isinstance(input_text, str):
        raise RecordError(src, line, "input", f"expected a string, got {type(input_text).__name__}")
    meta.update(prompt_format="alpaca", instruction=instruction, input=input_text)
    return alpaca_prompt(instruction, input_text)


def _text_or_chat(src: str, line: int, row: dict, key: str, meta: dict[str, Any]) -> Any:
    """A ``prompt``-style field: a string (format ``text``) or a message list (format ``chat``)."""
    if isinstance(row[key], list):
        meta["prompt_format"] = "chat"
        return _messages(src, line, key, row[key])
    if meta.get("prompt_format") != "alpaca":  # our own files keep an Alpaca prompt's format (and fields) in meta
        meta["prompt_format"] = "text"
    return _need_str(src, line, row, key)


def _row_meta(src: str, line: int, row: Any) -> dict[str, Any]:
    """The row's own ``meta`` (copied). The fields parsed from the row itself are set after it, so they win:
    a stale ``meta.prompt_format`` cannot contradict the prompt that is there."""
    if not isinstance(row, dict):
        raise RecordError(src, line, None, f"expected an object, got {type(row).__name__}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError(src, line, "meta", "expected an object")
    return dict(meta)


def to_preference(src: str, line: int, row: Any) -> PreferenceRecord:
    """Normalise one raw row in any supported format; raise ``RecordError`` naming the bad field."""
    meta = _row_meta(src, line, row)
    chosen, chosen_ctx = _completion(src, line, row, "chosen")
    rejected, rejected_ctx = _completion(src, line, row, "rejected")
    if "prompt" in row:
        prompt = _text_or_chat(src, line, row, "prompt", meta)
    elif "instruction" in row:
        prompt = _alpaca(src, line, row, meta)
        if isinstance(row.get("output"), str):
            meta.setdefault("output", row["output"])
    elif chosen_ctx is not None and rejected_ctx is not None:
        if not chosen_ctx or chosen_ctx != rejected_ctx:
            raise RecordError(src, line, "chosen", "conversations without a 'prompt' must share their turns "
                                                   "up to the last answer")
        prompt = chosen_ctx
        meta["prompt_format"] = "chat"
    else:
        raise RecordError(src, line, "prompt", "missing (no 'prompt', 'instruction' or shared conversation)")
    rid = row.get("id")
    if rid is None:
        rid = stable_id(prompt, chosen, rejected)
    elif not isinstance(rid, (str, int)):
        raise RecordError(src, line, "id", f"expected a string, got {type(rid).__name__}")
    return PreferenceRecord(id=str(rid), prompt=prompt, chosen=chosen, rejected=rejected, meta=meta)


KNOWN_GOOD_KEYS = ("known_good", "reference", "output")  # where a prompt row may carry its known-good answer


def to_prompt(src: str, line: int, row: Any) -> PromptRecord:
    """Normalise one prompt row: Alpaca (``instruction``/``input``/``output``), ``prompt`` (+ optional
    ``known_good``/``reference``/``output``), or chat ``messages``."""
    meta = _row_meta(src, line, row)
    known_good = None
    if "instruction" in row:
        prompt: Any = _alpaca(src, line, row, meta)
        if row.get("output") is not None:
            known_good = _need_str(src, line, row, "output", allow_empty=True) or None
    elif "prompt" in row:
        prompt = _text_or_chat(src, line, row, "prompt", meta)
        key = next((k for k in KNOWN_GOOD_KEYS if row.get(k) is not None), None)
        if key is not None:
            known_good = _need_str(src, line, row, key, allow_empty=True) or None
    elif "messages" in row:
        prompt = _messages(src, line, "messages", row["messages"])
        meta["prompt_format"] = "chat"
    else:
        raise RecordError(src, line, "prompt", "missing (expected 'instruction', 'prompt' or 'messages')")
    rid = row.get("id")
    rid = stable_id(prompt) if rid is None else str(rid)
    return PromptRecord(id=rid, prompt=prompt, known_good=known_good, meta=meta)


R = TypeVar("R", PreferenceRecord, PromptRecord, LabelledRecord)


def _load(source: str | Path, parse: Callable[[str, int, Any], R | list[R]], *, skip_bad: bool,
          drop: Callable[[R], str | None], duplicate: str, empty: str = "") -> tuple[list[R], LoadReport]:
    """Parse every row (into one record, or a list of them: ``empty`` names why a row gave none); bad ones are
    collected (``DataError`` unless ``skip_bad``), ``drop(record)`` names a reason to leave a record out
    (counted). A repeated id with the same content is a ``duplicate``, dropped and counted with its lines named; a
    repeated id with other content is a bad record (an ``id`` column that is a category would otherwise lose every
    row but the first)."""
    report = LoadReport(source=str(source))
    records: list[R] = []
    seen: dict[str, tuple[int, str]] = {}   # id -> (line, content digest) of its first row
    named: list[str] = []
    for src, line, row in iter_rows(source):
        try:
            parsed = parse(src, line, row)
        except RecordError as err:
            report.errors.append(err)
            continue
        parsed = parsed if isinstance(parsed, list) else [parsed]
        if not parsed:
            report.dropped[empty] += 1
        for rec in parsed:
            content = stable_id(rec.prompt, *(getattr(rec, f, None) for f in ("chosen", "rejected", "completion",
                                                                                "label")))
            first = seen.get(rec.id)
            if first is not None and first[1] != content:
                report.errors.append(RecordError(src, line, "id", f"{rec.id!r} is also the id of line {first[0]}, "
                                                 "whose content differs; give each row its own id, or remove the "
                                                 "'id' column to derive ids from the content"))
                continue
            why = drop(rec) or (duplicate if first is not None else None)
            if why:
                report.dropped[why] += 1
                if first is not None:
                    named.append(f"line {line} repeats line {first[0]} (id {rec.id!r})")
                continue
            seen[rec.id] = (line, content)
            records.append(rec)
    if named:
        n = report.dropped.pop(duplicate)
        report.dropped[f"{duplicate}: " + "; ".join(named[:5]) + (" …" if len(named) > 5 else "")] = n
    report.kept = len(records)
    if report.errors and not skip_bad:
        raise DataError(report.errors)
    return records, report


def load_preferences(source: str | Path, *, skip_bad: bool = False) -> tuple[list[PreferenceRecord], LoadReport]:
    """Load and validate preference pairs.

    Bad records raise ``DataError`` listing every one (file, line, field) unless ``skip_bad``, in which case
    they are counted in the report. Identical chosen/rejected pairs and repeated ids are dropped and counted.
    """
    return _load(source, to_preference, skip_bad=skip_bad,
                 drop=lambda r: "chosen identical to rejected" if r.chosen.strip() == r.rejected.strip() else None,
                 duplicate="duplicate id")


def load_prompts(source: str | Path, *, skip_bad: bool = False, limit: int = 0) -> tuple[list[PromptRecord],
                                                                                          LoadReport]:
    """Load prompts for generation or evaluation (the first ``limit`` when > 0); a repeated prompt is dropped
    and counted, and an empty set is an error naming the source."""
    records, report = _load(source, to_prompt, skip_bad=skip_bad, drop=lambda r: None, duplicate="duplicate prompt")
    records = records[:limit] if limit else records
    if not records:
        raise DataError([RecordError(str(source), None, None, "no prompts in it")])
    return records, report


def to_labelled(src: str, line: int, row: Any) -> list[LabelledRecord]:
    """One labelled row (``prompt``, ``completion``, ``label`` true/false; TRL's unpaired format, the prompt may be
    a conversation and the completion its last turn), or a preference pair split into a desirable and an
    undesirable row (ids ``<id>/chosen`` and ``<id>/rejected``)."""
    if isinstance(row, dict) and "chosen" in row and "completion" not in row:
        pair = to_preference(src, line, row)
        if pair.chosen.strip() == pair.rejected.strip():
            return []
        return [LabelledRecord(f"{pair.id}/chosen", pair.prompt, pair.chosen, True, dict(pair.meta)),
                LabelledRecord(f"{pair.id}/rejected", pair.prompt, pair.rejected, False, dict(pair.meta))]
    meta = _row_meta(src, line, row)
    completion, context = _completion(src, line, row, "completion")
    if "prompt" in row:
        prompt = _text_or_chat(src, line, row, "prompt", meta)
    elif "instruction" in row:
        prompt = _alpaca(src, line, row, meta)
    elif context:
        prompt, meta["prompt_format"] = context, "chat"
    else:
        raise RecordError(src, line, "prompt", "missing (no 'prompt', 'instruction' or conversation before the "
                                               "completion)")
    if "label" not in row or row["label"] is None:
        raise RecordError(src, line, "label", "missing: true for a desirable completion, false for an undesirable "
                                              "one")
    label = row["label"]
    if not isinstance(label, bool):
        raise RecordError(src, line, "label", f"expected true or false, got {json.dumps(label)}")
    rid = row.get("id")
    if rid is None:
        rid = stable_id(prompt, completion, label)
    elif not isinstance(rid, (str, int)):
        raise RecordError(src, line, "id", f"expected a string, got {type(rid).__name__}")
    return [LabelledRecord(id=str(rid), prompt=prompt, completion=completion, label=label, meta=meta)]


def load_labelled(source: str | Path, *, skip_bad: bool = False) -> tuple[list[LabelledRecord], LoadReport]:
    """Load single answers with desirable/undesirable labels; preference pairs in the same source count as one
    of each. Bad rows raise ``DataError`` (file, line, field) unless ``skip_bad``; repeated ids follow ``_load``'s
    rule, as for prompts and pairs."""
    return _load(source, to_labelled, skip_bad=skip_bad, drop=lambda r: None, duplicate="duplicate id",
                 empty="chosen identical to rejected")


def preference_to_prompt(rec: PreferenceRecord) -> PromptRecord:
    """The prompt side of a pair (held-out evaluation uses pairs' prompts). Its known-good answer is the row's own
    dataset answer when it has one (an Alpaca ``output``: the task's content before any rewrite toward the
    preference, what skill retention is read against), else the chosen side."""
    output = rec.meta.get("output")
    known_good = output if isinstance(output, str) and output.strip() else rec.chosen
    return PromptRecord(id=rec.id, prompt=rec.prompt, known_good=known_good, meta=dict(rec.meta))
