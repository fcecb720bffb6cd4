"""Files that are replaced whole, written so a crash never leaves half of one.

``atomic_path(target)`` hands out a temporary name beside ``target`` (same folder, so the rename stays on one
filesystem) and renames it over ``target`` only when the block finishes; on an error the temporary file or
folder is removed and ``target`` is untouched. Every whole-file write in the project goes through it: reports,
plots, the run state, checkpoints, the reference cache, converted models.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """A temporary path to write ``target`` through (a file, or a folder when ``folder``), renamed into place
    when the block ends without an error. An existing folder ``target`` is replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    else:  # a plain name (not mkstemp's 0600 file): the result gets the usual permissions
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if folder and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def count_lines(path: str | Path) -> int:
    """Non-blank lines of a file (0 when it does not exist): records in a JSONL output."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())
