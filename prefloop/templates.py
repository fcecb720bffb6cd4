"""Prompt templates shared by every stage.

The Alpaca template is the one the reference recipe (rasbt/LLMs-from-scratch ch07) trains and judges with.
"""

from __future__ import annotations

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
