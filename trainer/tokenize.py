"""Prompt formatting and tokenisation, the way TRL 1.16 does it, so a model trained here sees the same tokens.

Prompt format (``prefloop.templates.choose_format`` / ``render_prompt``, shared with the judge so a model is
measured the way it was trained):
- ``text``: a string prompt is used as it is;
- ``chat``: a message list goes through the tokenizer's chat template (``add_generation_prompt=True``);
- ``alpaca``: Alpaca rows (instruction/input) are rendered with the Alpaca template (``prefloop.templates``).
``auto`` follows the data, except that Alpaca rows become one user turn of the chat template when the tokenizer
has one (how a chat model is used). Forcing a format converts: text/Alpaca prompts become one user turn for
``chat``; a string becomes an Alpaca instruction for ``alpaca``; messages become ``role: content`` lines for
``text``.

Boundary rule (TRL 1.16): tokenise the prompt alone and prompt+completion; the completion is the suffix after
their common prefix (taken over both completions), so a token merged across the boundary is scored as part of the
completion. A mismatch (prompt not a prefix) is counted and reported once with the dropped text.

EOS: text completions get the tokenizer's EOS string appended (TRL's ``add_eos``); chat completions end with the
template's own end-of-turn token.

Truncation: a pair whose prompt has ``max_length`` tokens or more (or more than ``max_prompt_length``) is skipped
and counted: nothing of its completion would be left to learn from. Otherwise each completion is cut so that
prompt + completion fits ``max_length`` (TRL's ``keep_start``); such pairs are counted as truncated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefloop.models import common_prefix_length
from prefloop.records import Prompt
from prefloop.templates import choose_format, render_prompt

if TYPE_CHECKING:
    from trainer.data import TrainItem


@dataclass
class Example:
    """One tokenised training item: a prompt and its completions ([chosen, rejected] for DPO, [answer] for SFT)."""

    id: str
    prompt_ids: list[int]
    completions: list[list[int]]

    def counted_tokens(self, sequences: int | None = None) -> int:
        """Tokens as TRL counts them: prompt + completion for every sequence (the prompt counts once per side);
        ``sequences``: only the first that many (KTO's second one is its KL estimate's, which TRL does not count)."""
        return sum(len(self.prompt_ids) + len(c) for c in self.completions[:sequences])

    def packed_length(self) -> int:
        """Length of the packed row: the prompt once, then every completion."""
        return len(self.prompt_ids) + sum(len(c) for c in self.completions)


@dataclass
class TokenizeReport:
    """What tokenisation kept, skipped and changed; printed once by the trainer."""

    kept: int = 0
    formats: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    boundary_mismatches: int = 0
    boundary_example: str | None = None  # the prompt tail left out, for the one-time warning

    def lines(self) -> list[str]:
        out = [f"prompt format: {', '.join(f'{k} ({n})' for k, n in sorted(self.formats.items()))}"
               " (set prompt_format to force one)"]
        if self.skipped:
            out.append("skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())))
        if self.truncated:
            out.append(f"truncated: {self.truncated} example(s) had completions cut to fit max_length")
        if self.boundary_mismatches:
            out.append(f"warning: in {self.boundary_mismatches} pair(s) the tokenised prompt is not a prefix of "
                       f"prompt+completion (tokens merge across the boundary or the chat template renders the "
                       f"prompt differently); the completion starts where they diverge and this prompt tail is "
                       f"left out: {self.boundary_example!r}")
        return out


def _ids(tokenizer: Any, prompt: Prompt, completion: str | None) -> list[int]:
    if isinstance(prompt, list):
        if completion is None:
            out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        else:
            msgs = prompt + [{"role": "assistant", "content": completion}]
            out = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)
        return list(out["input_ids"])
    text = prompt if completion is None else prompt + completion
    return list(tokenizer(text)["input_ids"])


def tokenize_example(tokenizer: Any, rid: str, prompt: Prompt, completions: list[str], *, max_length: int,
                     max_prompt_length: int | None, report: TokenizeReport) -> Example | None:
    """Tokenise one prompt with its completions; ``None`` (counted in ``report``) when it must be skipped."""
    if isinstance(prompt, str):  # TRL's add_eos for standard (non-conversational) data
        eos = tokenizer.eos_token
        completions = [c if c.endswith(eos) else c + eos for c in completions]
    prompt_ids = _ids(tokenizer, prompt, None)
    full = [_ids(tokenizer, prompt, c) for c in completions]
    prompt_len = min(common_prefix_length(prompt_ids, f) for f in full)
    if prompt_len < len(prompt_ids):
        report.boundary_mismatches += 1
        if report.boundary_example is None:
            report.boundary_example = tokenizer.decode(prompt_ids[prompt_len:])
    prompt_ids = prompt_ids[:prompt_len]
    comp_ids = [f[prompt_len:] for f in full]
    if prompt_len == 0:
        report.skipped["empty prompt"] += 1
        return None
    if prompt_len >= max_length or (max_prompt_length is not None and prompt_len > max_prompt_length):
        report.skipped["prompt longer than the limit"] += 1
        return None
    if any(len(c) == 0 for c in comp_ids):
        report.skipped["empty completion"] += 1
        return None
    room = max_length - prompt_len
    if any(len(c) > room for c in comp_ids):
        report.truncated += 1
        comp_ids = [c[:room] for c in comp_ids]
    return Example(id=rid, prompt_ids=prompt_ids, completions=comp_ids)


def tokenize_records(tokenizer: Any, items: "list[TrainItem]", *, prompt_format: str, max_length: int,
                     max_prompt_length: int | None) -> tuple[list[Example], TokenizeReport]:
    """Tokenise training items; the report says what happened."""
    report = TokenizeReport()
    examples: list[Example] = []
    for item in items:
        fmt = choose_format(item.prompt_format, prompt_format, bool(getattr(tokenizer, "chat_template", None)))
        if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"record {item.id}: prompt format 'chat' needs a tokenizer with a chat template; this "
                             "tokenizer has none (set prompt_format = 'text' or 'alpaca')")
        report.formats[fmt] += 1
        prompt = render_prompt(item.prompt, item.meta, item.prompt_format, fmt)
        ex = tokenize_example(tokenizer, item.id, prompt, item.completions, max_length=max_length,
                              max_prompt_length=max_prompt_length, report=report)
        if ex is not None:
            examples.append(ex)
    report.kept = len(examples)
    return examples, report
