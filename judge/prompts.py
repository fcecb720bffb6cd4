"""Judge prompt templates: plain text files users can copy and edit.

Format: an optional ``=== system ===`` section and a ``=== user ===`` section. Placeholders are ``{prompt}``,
``{answer}`` (score mode), ``{answer_a}``, ``{answer_b}`` (pairwise) and ``{known_good}`` (the dataset's answer;
``{reference}`` is read as the same, for templates written before the rename); text between
``{#if known_good}`` and ``{#end}`` is kept only when a known-good answer is given. Anything else in braces (a
JSON example, say) is left alone, and text substituted in is never scanned again, so an answer containing
``{prompt}`` stays as written.

``{nonce}`` is an id made from the texts being judged (a hash of all of them). The built-in templates put it in
every start and end marker, so an answer cannot close its own block: it would have to contain a hash of itself.
An answer that writes ``[End of Assistant A's Answer]`` or a backtick stays inside its block, and the judge is told
that a marker without the id is part of an answer.

The template's hash is part of every cache key: edit the template and the judgments are made afresh.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

from prefloop.errors import BadInput
from prefloop.records import Prompt, prompt_text
from prefloop.templates import ALPACA_RESPONSE

BUILTIN = ("pairwise", "score")
PLACEHOLDER = re.compile(r"\{(prompt|answer|answer_a|answer_b|known_good|reference|nonce)\}")
CONDITIONAL = re.compile(r"\{#if (?:known_good|reference)\}(.*?)\{#end\}", re.DOTALL)
SECTION = re.compile(r"^=== (system|user) ===[ \t]*$", re.MULTILINE)


class TemplateError(BadInput, ValueError):
    """A template file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: where it came from, its text and a short hash of that text."""

    name: str
    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def sections(self) -> dict[str, str]:
        parts = SECTION.split(self.text)
        if len(parts) == 1:  # no headers: the whole file is the user turn
            return {"user": self.text.strip("\n")}
        out = {}
        for role, body in zip(parts[1::2], parts[2::2]):
            out[role] = body.strip("\n")
        return out

    def render(self, **fields: str | None) -> list[dict[str, str]]:
        """Chat messages with the fields filled in (``known_good=None`` drops the conditional blocks)."""
        has_ref = bool(fields.get("known_good"))
        values = {k: (v if v is not None else "") for k, v in fields.items()}
        values["reference"] = values.get("known_good", "")
        values["nonce"] = delimiter_id(values)

        def fill(text: str) -> str:
            text = CONDITIONAL.sub(lambda m: m.group(1) if has_ref else "", text)
            return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)

        messages = []
        for role, body in self.sections().items():
            body = fill(body)
            if body.strip():
                messages.append({"role": role, "content": body})
        return messages


def delimiter_id(values: dict[str, str]) -> str:
    """The id in the markers around judged texts: a digest of all of them, so none can contain it."""
    return hashlib.sha256("\x00".join(f"{k}={values[k]}" for k in sorted(values)).encode("utf-8")).hexdigest()[:12]


def load_template(name_or_path: str | Path) -> JudgeTemplate:
    """A built-in template by name (``pairwise``, ``score``) or a user's file by path."""
    text_name = str(name_or_path)
    if text_name in BUILTIN:
        text = importlib.resources.files("judge.templates").joinpath(f"{text_name}.txt").read_text("utf-8")
        return JudgeTemplate(name=text_name, text=text)
    path = Path(text_name).expanduser()
    if not path.is_file():
        raise TemplateError(f"{path}: no such judge template (built-in ones: {', '.join(BUILTIN)})")
    text = path.read_text("utf-8")
    template = JudgeTemplate(name=str(path), text=text)
    if "user" not in template.sections():
        raise TemplateError(f"{path}: no '=== user ===' section")
    return template


def check_fields(template: JudgeTemplate, needed: tuple[str, ...]) -> None:
    """Refuse a template that would send the judge a prompt without the answers it must judge."""
    found = set(PLACEHOLDER.findall(template.text))
    missing = [f for f in needed if f not in found]
    if missing:
        raise TemplateError(f"{template.name}: missing placeholder(s) " + ", ".join("{" + m + "}" for m in missing))


def judge_prompt_text(prompt: Prompt) -> str:
    """The task as the judge should read it: chat turns as text, and an Alpaca prompt without its trailing
    '### Response:' header (the seed's judge prompt shows ``format_input`` only)."""
    text = prompt_text(prompt)
    if text.endswith(ALPACA_RESPONSE):
        text = text[: -len(ALPACA_RESPONSE)]
    return text.strip("\n")
