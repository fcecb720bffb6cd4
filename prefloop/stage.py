"""What every stage returns: whether it finished, why not, and what it wrote.

``generate``, ``train``/``sft`` and ``judge`` each return a dataclass derived from ``StageResult`` (their own figures
beside these fields), so the loop and the commands treat them alike: ``status`` decides the exit code and whether
``prefloop run`` may go on, ``outputs`` names the files the stage wrote, ``to_json()`` is what the run record keeps.

- ``complete``: every unit of work is done; the outputs are final.
- ``interrupted``: Ctrl-C or SIGTERM; what is written stays valid and the same command resumes it.
- ``failed``: the stage stopped on its own (failures left after retries, non-finite training values, a server
  that went away); ``reason`` says why and what to do. Finished work stays on disk.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefloop.fingerprint import jsonable

Status = Literal["complete", "interrupted", "failed"]
EXIT_CODES: dict[str, int] = {"complete": 0, "failed": 1, "interrupted": 130}


@dataclass(kw_only=True)
class StageResult:
    """The common part of every stage's result (see the module docstring)."""

    status: Status = "complete"
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)   # name -> path written

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON (paths as strings, nested dataclasses as objects)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.loads(json.dumps(data, default=jsonable))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        """Back from ``to_json()``; keys this version does not know are ignored (a newer file still reads)."""
        return from_fields(cls, data)

    @classmethod
    def read(cls, path: str | Path) -> Any:
        """The result saved at ``path``, or None when there is none yet."""
        path = Path(path)
        return cls.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


def from_fields(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from a JSON object, taking only the keys that are its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
