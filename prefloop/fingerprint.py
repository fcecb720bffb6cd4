"""Stage fingerprints and the run folder's stage record: what lets ``prefloop run`` skip finished work.

A stage's fingerprint is a hash of its settings (only those that change its outputs) and of its inputs: the
content hash of each input file, or the fingerprint of the stage that produced it. The record
(``RUN/state.json``) keeps, per stage, the fingerprint it last ran with, whether it finished, and its outputs.

- same fingerprint, finished, outputs present  -> skip;
- same fingerprint, not finished (killed)      -> resume: the stage continues its own partial outputs
  (the generator and judge skip finished ids, the trainer resumes from its newest checkpoint);
- another fingerprint (a setting or an input changed) -> rerun from scratch, after moving the old outputs to
  ``RUN/stale/<stage>/`` (nothing written is lost until the next change of the same stage replaces it).

Because a stage's fingerprint includes its upstream fingerprints, a changed training setting reruns training
and everything after it, and leaves generation alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from prefloop.files import atomic_write_text

STATE_FILE = "state.json"
STALE_DIR = "stale"
_CHUNK = 1 << 20


def canonical(obj: Any) -> str:
    """Canonical JSON for hashing: sorted keys, no whitespace; paths and tuples become strings and lists."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=jsonable)


def jsonable(obj: Any) -> Any:
    """JSON for the values settings and results hold (``json.dumps(default=jsonable)``): paths as strings, sets
    sorted, dataclasses as objects. Anything else is an error: a fingerprint must never depend on a repr."""
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def fingerprint(settings: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> str:
    """The stage's identity: a short hash of its settings and its inputs' hashes."""
    blob = canonical({"settings": dict(settings), "inputs": dict(inputs or {})})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative path + content, sorted; dot files skipped)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = child.relative_to(path)
            if any(part.startswith(".") for part in rel.parts):
                continue
            digest.update(rel.as_posix().encode("utf-8") + b"\0")
            digest.update(file_hash(child).encode("ascii"))
        return digest.hexdigest()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(name: str) -> str:
    """A cheap identity for a model setting: for a local file or folder, names, sizes and modification times
    (hashing gigabytes of weights on every run would cost more than it saves); otherwise the name itself."""
    path = Path(name).expanduser()
    if not path.exists():
        return f"name:{name}"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    listing = [(p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat().st_size,
                int(p.stat().st_mtime)) for p in files]
    return "files:" + hashlib.sha256(canonical(listing).encode("utf-8")).hexdigest()[:16]


@dataclass
class StageRecord:
    """One stage's last run: its fingerprint, status (``running`` | ``done`` | ``failed``), outputs and a small
    summary."""

    name: str
    fingerprint: str
    status: str = "running"
    started_at: float = 0.0
    finished_at: float | None = None
    runs: int = 0                      # how many times the stage was started for this fingerprint
    outputs: list[str] = field(default_factory=list)   # paths relative to the run folder
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    resumable: dict[str, str] = field(default_factory=dict)  # inputs whose change resumes instead of restarting


class RunState:
    """``RUN/state.json``: read at start, rewritten atomically at every change, so a kill never corrupts it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STATE_FILE
        self.stages: dict[str, StageRecord] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            for name, raw in data.get("stages", {}).items():
                self.stages[name] = StageRecord(**raw)

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        body = {"stages": {name: asdict(rec) for name, rec in self.stages.items()}}
        atomic_write_text(self.path, json.dumps(body, indent=2, ensure_ascii=False, default=jsonable) + "\n")

    def get(self, name: str) -> StageRecord | None:
        return self.stages.get(name)

    def decide(self, name: str, fp: str, resumable: Mapping[str, str] | None = None) -> str:
        """``skip`` (finished with these inputs and settings, outputs present), ``resume`` (started with them,
        not finished; or finished, and only a ``resumable`` input changed) or ``fresh`` (never run, or run with
        other settings or inputs).

        A resumable input is one the stage itself continues from per item: the generator's prompts file, where a
        new prompt means one more pair to generate, not all pairs again."""
        rec = self.stages.get(name)
        if rec is None or rec.fingerprint != fp:
            return "fresh"
        same = resumable is None or dict(resumable) == rec.resumable
        if rec.status == "done" and same and all((self.run_dir / out).exists() for out in rec.outputs):
            return "skip"
        return "resume"

    def done_with(self, name: str, settings: Mapping[str, Any]) -> bool:
        """Finished, and with these settings (whatever its inputs): a rerun may not need it at all."""
        rec = self.stages.get(name)
        return rec is not None and rec.status == "done" and canonical(rec.settings) == canonical(dict(settings))

    def start(self, name: str, fp: str, outputs: list[str | Path], *, settings: Mapping[str, Any] | None = None,
              inputs: Mapping[str, str] | None = None, resumable: Mapping[str, str] | None = None) -> str:
        """Mark a stage started and return the decision that applied (``resume`` or ``fresh``). On ``fresh``
        the previous outputs of this stage, if any, move to ``RUN/stale/<name>/``."""
        decision = self.decide(name, fp, resumable)
        if decision == "skip":
            raise ValueError(f"stage {name} is already done for {fp}; check decide() first")
        rels = [self._rel(p) for p in outputs]
        prev = self.stages.get(name)
        if decision == "fresh":
            self.move_stale(name, rels + (prev.outputs if prev else []))
        self.stages[name] = StageRecord(
            name=name, fingerprint=fp, status="running", started_at=time.time(),
            runs=(prev.runs + 1 if prev and decision == "resume" else 1), outputs=rels,
            settings=dict(settings or {}), inputs=dict(inputs or {}), resumable=dict(resumable or {}))
        self.save()
        return decision

    def finish(self, name: str, info: Mapping[str, Any] | None = None, outputs: list[str | Path] | None = None
               ) -> None:
        rec = self.stages[name]
        rec.status, rec.finished_at = "done", time.time()
        if outputs is not None:
            rec.outputs = [self._rel(p) for p in outputs]
        if info:
            rec.info = dict(info)
        self.save()

    def invalidate(self, name: str) -> None:
        """Forget a stage (its outputs stay where they are): the next run treats it as never run."""
        if self.stages.pop(name, None) is not None:
            self.save()

    def move_stale(self, name: str, outputs: list[str]) -> list[Path]:
        """Move a stage's outputs (paths relative to the run folder) under ``stale/<name>/``, replacing what an
        earlier change left there."""
        target_root = self.run_dir / STALE_DIR / name
        rels = list(dict.fromkeys(outputs))
        # a folder carries the files inside it: move only the outermost paths
        outer = [r for r in rels if not any(o != r and Path(r).is_relative_to(o) for o in rels)]
        present = [rel for rel in outer if (self.run_dir / rel).exists()]
        if not present:
            return []
        if target_root.exists():
            shutil.rmtree(target_root)
        moved = []
        for rel in present:
            dest = target_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.run_dir / rel, dest)
            moved.append(dest)
        return moved

    def _rel(self, path: str | Path) -> str:
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        try:
            return path.resolve().relative_to(self.run_dir.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"stage output {path} is outside the run folder {self.run_dir}") from None
