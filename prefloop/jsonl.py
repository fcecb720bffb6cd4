"""JSONL storage that survives crashes.

Writers append one line per record and flush it (and optionally fsync) at once, so a ``kill -9`` loses at most
the records not yet handed to ``append``. A crash can leave a last line without its newline; readers skip it
(and report it) and ``JsonlAppender`` cuts it off before appending, so a resumed run never writes a broken line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from prefloop.files import atomic_path
from prefloop.records import RecordError


def _decode(path: Path, lineno: int, raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(str(path), lineno, None, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(str(path), lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None


def iter_jsonl(path: str | Path, *, partial_tail_ok: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for every non-blank line.

    A last line without a trailing newline that does not parse is the mark of an interrupted write: it is
    skipped when ``partial_tail_ok`` (the resume case) and an error otherwise.
    """
    path = Path(path)
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        if i == last and partial_tail_ok:  # no newline after it: possibly cut short
            try:
                yield i + 1, _decode(path, i + 1, raw)
            except RecordError:
                return
            continue
        yield i + 1, _decode(path, i + 1, raw)


def read_jsonl(path: str | Path, *, partial_tail_ok: bool = True) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path, partial_tail_ok=partial_tail_ok)]


def repair_tail(path: Path) -> int:
    """Cut a trailing partial line (no newline) off ``path``; return the number of bytes removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        # walk back to the previous newline
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                fh.truncate(keep)
                return size - keep
            pos = start
        fh.truncate(0)
        return size


class JsonlAppender:
    """Append-only JSONL writer: one ``write`` + ``flush`` per record, optional ``fsync``.

    Use as a context manager. Each line is written with a single ``write`` call so concurrent tasks in one
    event loop never interleave partial lines.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_tail(self.path)
        self._fh = self.path.open("ab")
        self._fsync = fsync

    def append(self, obj: Any) -> None:
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self._fh.write(line.encode("utf-8"))
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:  # a full disk: write() names no file, so the message would not say which
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from exc

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | Path, rows: list[Any]) -> None:
    """Write a whole file atomically (temp file + rename): for outputs that are replaced, not appended."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
