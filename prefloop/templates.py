"""Prompt templates shared by every stage, and the one rule for how a record's prompt reaches a model.

The Alpaca template is the one the reference recipe (rasbt/LLMs-from-scratch ch07) trains and judges with. The
trainer (what the model learns from) and the judge (what the model answers on held-out prompts) render prompts
through ``choose_format`` and ``render_prompt`` here, so a model is measured the way it was trained.
"""

from __future__ import annotations

from typing import Any

from prefloop.records import Prompt, PromptRecord, prompt_text, user_message

PROMPT_FORMATS = ("auto", "text", "chat", "alpaca")

ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
ALPACA_RESPONSE = "\n\n### Response:\n"


def alpaca_input(instruction: str, input_text: str = "") -> str:
    """The recipe's ``format_input``: header, instruction, and the input block only when there is one."""
    text = f"{ALPACA_HEADER}\n\n### Instruction:\n{instruction}"
    if input_text:
        text += f"\n\n### Input:\n{input_text}"
    return text


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The full training prompt: ``format_input`` plus the response header, so the completion is the answer alone."""
    return alpaca_input(instruction, input_text) + ALPACA_RESPONSE


def alpaca_user_turn(instruction: str, input_text: str = "") -> str:
    """The same task as one chat user turn, for when a chat template is forced on Alpaca data."""
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def choose_format(record_format: str, forced: str, has_chat_template: bool) -> str:
    """The format a record's prompt is rendered in: ``forced`` unless it is ``auto``.

    ``auto`` follows the record, except that an Alpaca row becomes one user turn of the chat template when the
    model has one (LLaMA-Factory's default): a chat model is used through its template, in a chat window and
    after export to Ollama, and what it learns through the raw Alpaca text shows there only weakly
    (bench/alignment.py measures both; the README has the figures).
    """
    if forced != "auto":
        return forced
    if record_format == "alpaca" and has_chat_template:
        return "chat"
    return record_format


def render_prompt(prompt: Prompt, meta: dict[str, Any], record_format: str, fmt: str) -> Prompt:
    """The prompt as the chosen format wants it: a string (text/alpaca) or a message list (chat).

    Converting: text and Alpaca prompts become one user turn for ``chat`` (an Alpaca row as its instruction and
    input, without the Alpaca header); a string becomes an Alpaca instruction for ``alpaca``; messages become
    ``role: content`` lines for ``text``.
    """
    if fmt == "chat":
        if isinstance(prompt, list):
            return prompt
        if record_format == "alpaca" and "instruction" in meta:
            return user_message(alpaca_user_turn(meta["instruction"], meta.get("input", "")))
        return user_message(prompt)
    if fmt == "alpaca":
        if record_format == "alpaca" and isinstance(prompt, str):
            return prompt
        text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt if m["role"] == "user")
        return alpaca_prompt(text)
    return prompt if isinstance(prompt, str) else prompt_text(prompt)


def prompt_for(rec: PromptRecord, forced: str, has_chat_template: bool) -> tuple[Prompt, str]:
    """A record's prompt as a model gets it under the rule above (``forced``: the ``prompt_format`` setting; a
    served chat model counts as having a chat template), and the format's name."""
    fmt = choose_format(rec.prompt_format, forced, has_chat_template)
    return render_prompt(rec.prompt, rec.meta, rec.prompt_format, fmt), fmt
