"""SFT: next-token NLL on the response tokens only, through the same loop, packing and fast log-prob path as DPO,
so a user can go base → SFT → DPO with one tool.

Data: Alpaca rows (instruction/input/output), ``prompt`` + ``reference``/``output`` rows, chat
``messages`` ending in an assistant turn, or preference pairs (their chosen answer is the target).
"""

from __future__ import annotations

from typing import Any

import torch

from prefloop.records import RecordError
from prefloop.sources import DataError, iter_rows, load_preferences, load_prompts
from trainer.config import TrainConfig
from trainer.logps import packed_logps
from trainer.loop import Item, TrainError, TrainResult, load_data, run
from trainer.metrics import LiveView
from trainer.packing import PackedBatch
from trainer.tokenize import Example


def load_sft_items(source: str) -> tuple[list[Item], list[str]]:
    """(prompt, response) items from any supported source; rows without a response are dropped and counted."""
    try:
        first = next(iter_rows(source), None)
        if first is None:
            return [], [f"{source}: empty"]
        row = first[2]
        if isinstance(row, dict) and "chosen" in row:
            records, report = load_preferences(source)
            return ([(r.id, r.prompt, r.meta, r.prompt_format, [r.chosen]) for r in records],
                    [report.summary() + " (SFT on the chosen answers)"])
        prompts, report = load_prompts(source)
    except (DataError, RecordError) as exc:
        raise TrainError(str(exc)) from None
    items, dropped = [], 0
    for p in prompts:
        prompt, reference = p.prompt, p.reference
        if reference is None and isinstance(prompt, list) and prompt and prompt[-1]["role"] == "assistant":
            prompt, reference = prompt[:-1], prompt[-1]["content"]
        if not reference:
            dropped += 1
            continue
        items.append((p.id, prompt, p.meta, p.prompt_format, [reference]))
    note = report.summary() + (f", {dropped} without a response (dropped)" if dropped else "")
    return items, [note]


class SFTObjective:
    name = "sft"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def load(self, cfg: TrainConfig) -> tuple[list[Item], list[Item] | None, list[str]]:
        return load_data(cfg, load_sft_items, "SFT data (Alpaca JSON, prompt/response JSONL, or pairs)")

    def prepare(self, model: Any, tokenizer: Any, train: list[Example], held_out: list[Example],
                view: LiveView) -> list[str]:
        return []

    def loss(self, model: Any, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = packed_logps(model, batch)
        nll = -sums.float().sum() / counts.sum().clamp(min=1)  # mean over response tokens in the batch
        return nll, {"loss": nll.item(), "nll": nll.item(), "logps/response": (sums / counts).mean().item()}

    def is_stuck(self, row: dict[str, float]) -> bool:
        return False

    def stuck_message(self, steps: int) -> str:
        return ""


def train_sft(cfg: TrainConfig, console: Any = None, *, model: Any = None, tokenizer: Any = None) -> TrainResult:
    """Supervised fine-tuning as ``cfg`` says (``beta``, ``loss_type`` and ``reference`` are not used)."""
    return run(cfg, SFTObjective(cfg), console, model=model, tokenizer=tokenizer)
