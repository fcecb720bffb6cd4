"""Files that are replaced whole, written so a crash never leaves half of one.

``atomic_path(target)`` hands out a temporary name beside ``target`` (same folder, so the rename stays on one
filesystem) and renames it over ``target`` only when the block finishes; on an error the temporary file or
folder is removed and ``target`` is untouched. Every whole-file write in the project goes through it: reports,
plots, the run state, checkpoints, the reference cache, converted models.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from prefloop.errors import PrefloopError


class Busy(PrefloopError, RuntimeError):
    """Another process holds the lock on this output: two runs must never write one folder or file."""


@contextlib.contextmanager
def atomic_path(target: str | Path, *, folder: bool = False) -> Iterator[Path]:
    """A temporary path to write ``target`` through (a file, or a folder when ``folder``), renamed into place
    when the block ends without an error. An existing folder ``target`` is replaced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:  # made by mkdir, not mkdtemp (0700): a model folder must stay readable by e.g. an Ollama server
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir()
    else:  # a plain name (not mkstemp's 0600 file): the result gets the usual permissions
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if folder and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file: say which
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def writable(path: str | Path, what: str = "output") -> Path:
    """Make sure ``path`` can be written (its folder exists or can be made, and is writable) before any work,
    so a bad output path is one line at the start instead of an error hours later. Returns the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{what} {path}: its folder {path.parent} cannot be made ({exc.strerror or exc}); "
                      "choose another path") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OSError(f"{what} {path}: {path.parent} is not writable; choose another path or fix its permissions")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` name one file: the same path once resolved (symlinks), or the same inode (a hard link)."""
    a, b = Path(a), Path(b)
    if a.expanduser().resolve() == b.expanduser().resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def count_lines(path: str | Path) -> int:
    """Non-blank lines of a file (0 when it does not exist): records in a JSONL output."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


class Lock:
    """An exclusive ``flock`` on ``<target>.lock`` (a file beside it, or ``.lock`` inside a folder), taken on the
    resolved path so a symlinked or relative spelling of the same output is the same lock. A file target is also
    locked itself (created empty when missing): a ``flock`` belongs to the inode, so a hard link to the same
    output is the same lock too. The kernel releases both even on ``kill -9``; the lock file holds the holder's
    pid for the message."""

    def __init__(self, target: str | Path, *, folder: bool = False):
        resolved = Path(target).expanduser().resolve()
        self.target = resolved
        self.path = resolved / ".lock" if folder else resolved.with_name(resolved.name + ".lock")
        self.folder = folder
        self._fh: Any = None
        self._data: int | None = None

    def __enter__(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "?"
            self._fh.close()
            raise Busy(f"{self.target} is being written by another run (pid {holder}); wait for it to finish "
                       "or stop it first") from None
        if not self.folder:  # the output's inode (st_dev, st_ino): any name of it
            try:
                self._data = os.open(self.target, os.O_RDONLY | os.O_CREAT, 0o644)
                fcntl.flock(self._data, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._release()
                msg = (f"{self.target} is being written by another run under another name (a hard link to the "
                       "same file); wait for it to finish, stop it, or give this run its own output")
                raise Busy(msg) from None
            except OSError:
                self._release()
                raise
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()
        return self

    def _release(self) -> None:
        if self._data is not None:
            os.close(self._data)   # closing the descriptor drops its flock
            self._data = None
        with contextlib.suppress(OSError):
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()

    def __exit__(self, *exc: object) -> None:
        self._release()
