"""What the trainer reads: records from any supported source, as ``TrainItem``s, before tokenisation.

DPO reads preference pairs (``[chosen, rejected]`` completions); SFT reads prompt/response rows, chat
conversations ending in an assistant turn, or pairs (their chosen answer). Bad records stop the run here, before
any model is loaded, with file, line and field (``TrainError``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from prefloop.errors import BadInput
from prefloop.records import Prompt, RecordError
from prefloop.sources import DataError, iter_rows, load_labelled, load_preferences, load_prompts

from trainer.config import TrainConfig


class TrainError(BadInput, RuntimeError):
    """A run that cannot start or must stop; the message says why and what to change."""


@dataclass
class TrainItem:
    """One record to train on: a prompt and the completions scored after it (``[chosen, rejected]`` for DPO,
    ``[answer]`` for SFT). ``prompt_format`` is the record's own format (text, chat or alpaca); ``meta`` keeps the
    Alpaca fields a forced chat format needs."""

    id: str
    prompt: Prompt
    completions: list[str]
    prompt_format: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)
    label: bool | None = None  # labelled data (KTO): whether completions[0] is desirable


Loader = Callable[[str], "tuple[list[TrainItem], list[str]]"]


def load_pairs(source: str) -> tuple[list[TrainItem], list[str]]:
    """Preference pairs as items; bad records raise ``TrainError`` listing file, line and field."""
    try:
        records, report = load_preferences(source)
    except (DataError, RecordError) as exc:
        raise TrainError(str(exc)) from None
    items = [TrainItem(r.id, r.prompt, [r.chosen, r.rejected], r.prompt_format, r.meta) for r in records]
    return items, [report.summary()]


def load_sft_items(source: str) -> tuple[list[TrainItem], list[str]]:
    """(prompt, response) items from any supported source; rows without a response are dropped and counted."""
    try:
        first = next(iter_rows(source), None)
        if first is None:
            return [], [f"{source}: empty"]
        if isinstance(first[2], dict) and "chosen" in first[2]:
            records, report = load_preferences(source)
            return ([TrainItem(r.id, r.prompt, [r.chosen], r.prompt_format, r.meta) for r in records],
                    [report.summary() + " (SFT on the chosen answers)"])
        prompts, report = load_prompts(source)
    except (DataError, RecordError) as exc:
        raise TrainError(str(exc)) from None
    items, dropped = [], 0
    for p in prompts:
        prompt, answer = p.prompt, p.known_good
        if answer is None and isinstance(prompt, list) and prompt and prompt[-1]["role"] == "assistant":
            prompt, answer = prompt[:-1], prompt[-1]["content"]
        if not answer:
            dropped += 1
            continue
        items.append(TrainItem(p.id, prompt, [answer], p.prompt_format, p.meta))
    note = report.summary() + (f", {dropped} without a response (dropped)" if dropped else "")
    return items, [note]


def load_labelled_items(source: str) -> tuple[list[TrainItem], list[str]]:
    """Single answers with desirable/undesirable labels (``completions`` = ``[answer]``); pairs count as one of
    each."""
    try:
        records, report = load_labelled(source)
    except (DataError, RecordError) as exc:
        raise TrainError(str(exc)) from None
    items = [TrainItem(r.id, r.prompt, [r.completion], r.prompt_format, r.meta, label=r.label) for r in records]
    good = sum(r.label for r in records)
    return items, [report.summary() + f" ({good} desirable, {len(records) - good} undesirable)"]


LOADERS: dict[str, Loader] = {"pairs": load_pairs, "labelled": load_labelled_items, "text": load_sft_items}
DESCRIPTIONS = {"pairs": "preference data (a JSONL/JSON file, dataset folder or name)",
                "labelled": "labelled answers ({prompt, completion, label} rows, or preference pairs)",
                "text": "SFT data (Alpaca JSON, prompt/response JSONL, or pairs)"}


def load_data(cfg: TrainConfig, loader: Loader, what: str) -> tuple[list[TrainItem], list[TrainItem] | None,
                                                                   list[str]]:
    """Training items from ``cfg.data`` and held-out ones from ``cfg.eval_data`` (when given) through ``loader``;
    ``what`` names the data in the error when none is given."""
    if not cfg.data:
        raise TrainError(f"train.data: no {what} given")
    items, notes = loader(cfg.data)
    held = None
    if cfg.eval_data:
        held, more = loader(cfg.eval_data)
        notes += more
    return items, held, notes


def split_items(items: list[TrainItem], fraction: float, seed: int) -> tuple[list[TrainItem], list[TrainItem]]:
    """Hold out ``fraction`` of the items, chosen by a seeded shuffle (same seed, same split)."""
    if fraction <= 0:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(fraction * len(items)))])
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]
