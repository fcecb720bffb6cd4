"""SFT: next-token NLL on the response tokens only, through the same loop, packing and fast log-prob path as DPO,
so a user can go base → SFT → DPO with one tool.

Data: Alpaca rows (instruction/input/output), ``prompt`` + ``known_good``/``output`` rows, chat ``messages`` ending
in an assistant turn, or preference pairs (their chosen answer is the target); see ``trainer.data``.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.loop import Objective, Policy, TrainResult, run
from trainer.packing import PackedBatch


class SFTObjective(Objective):
    name = "sft"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = policy(batch)
        nll = -sums.float().sum() / max(1, batch.total_tokens[0])  # mean over the micro-batch's response tokens
        return nll, {"loss": nll.item(), "nll": nll.item(),
                     "logps/response": (sums / counts).sum().item() / batch.total_rows}


def train_sft(cfg: TrainConfig, console: Any = None, *, model: Any = None, tokenizer: Any = None) -> TrainResult:
    """Supervised fine-tuning as ``cfg`` says (the other objectives' settings are not read)."""
    return run(cfg, SFTObjective(cfg), console, model=model, tokenizer=tokenizer)
