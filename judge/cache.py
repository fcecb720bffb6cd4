"""Every usable judgment, on disk, so a rerun or a resumed run asks the judge nothing twice.

A sqlite file (stdlib; safe for several processes, one row per judgment, committed at once). The key hashes
everything that decides the answer: judge spec, template hash, mode, prompt, answers in the order shown,
the known-good answer, and the sampling options. Only parsed verdicts and scores are stored: a failed or unparseable call is
never written, so it is asked again next time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from prefloop.records import stable_id


def judgment_key(*, judge: str, template_hash: str, mode: str, prompt: str, answers: tuple[str, ...],
                 known_good: str | None, options: dict[str, Any]) -> str:
    """The cache key of one judge call (``answers`` in the order the judge sees them)."""
    return stable_id(judge, template_hash, mode, prompt, list(answers), known_good, options, length=40)


class JudgeCache:
    """``get``/``put`` of JSON values by key; counts hits and misses for reports and benchmarks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                         "created REAL NOT NULL)")
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def get(self, key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM judgments WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO judgments (key, value, created) VALUES (?, ?, ?)",
                         (key, json.dumps(value, ensure_ascii=False), time.time()))
        self.writes += 1

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
