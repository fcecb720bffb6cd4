"""Preference records and the errors that point at the bad input.

One record is ``{"id", "prompt", "chosen", "rejected", "meta"}``. The prompt is either a string (used as it is)
or a list of chat messages (rendered later through a tokenizer's chat template). ``meta["prompt_format"]`` says
which of ``text``, ``chat`` or ``alpaca`` the prompt came from so the trainer can tell the user what it applied.

Words: the *known-good answer* is a prompt's answer from the dataset (an Alpaca ``output``); *reference* always
means the reference model (the frozen SFT model DPO is anchored to and judged against).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from prefloop.errors import BadInput

Message = dict[str, str]
Prompt = str | list[Message]



class RecordError(BadInput, ValueError):
    """A bad input record, located by file, line (1-based; the array index + 1 for JSON arrays) and field."""

    def __init__(self, source: str, line: int | None, field_name: str | None, problem: str):
        self.source, self.line, self.field, self.problem = source, line, field_name, problem
        where = source if line is None else f"{source}:{line}"
        what = f" field '{field_name}'" if field_name else ""
        super().__init__(f"{where}:{what} {problem}".replace(": :", ":"))


class _HasPrompt:
    """What both record kinds say about their prompt (a mixin: each dataclass declares its own fields)."""

    prompt: Prompt
    meta: dict[str, Any]

    @property
    def prompt_format(self) -> str:
        """``text``, ``chat`` or ``alpaca``: the format the prompt came in (``meta["prompt_format"]``)."""
        return self.meta.get("prompt_format", "chat" if isinstance(self.prompt, list) else "text")


@dataclass
class PreferenceRecord(_HasPrompt):
    """A prompt with a better (chosen) and a worse (rejected) completion."""

    id: str
    prompt: Prompt
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "meta": self.meta}


@dataclass
class PromptRecord(_HasPrompt):
    """A prompt without preferences: generator input and held-out evaluation prompts.

    ``known_good`` is the dataset's answer when the source has one (the Alpaca ``output``).
    """

    id: str
    prompt: Prompt
    known_good: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "known_good": self.known_good, "meta": self.meta}


@dataclass
class LabelledRecord(_HasPrompt):
    """A prompt with one completion marked desirable (``label`` True) or undesirable: KTO's data, TRL's unpaired
    preference format, a person's thumbs up or down."""

    id: str
    prompt: Prompt
    completion: str
    label: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "completion": self.completion, "label": self.label,
                "meta": self.meta}


def stable_id(*parts: Any, length: int = 16) -> str:
    """A deterministic id from any JSON-serialisable parts: same inputs and settings, same id, across runs."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text, for judges and logs (chat prompts become 'role: content' lines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def user_message(prompt: Prompt) -> list[Message]:
    """A prompt as chat messages (a string becomes one user turn)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
