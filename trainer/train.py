"""``train(cfg)``: run the objective ``cfg.objective`` names (``trainer.objectives``) through the shared loop."""

from __future__ import annotations

from typing import Any

from trainer.config import TrainConfig
from trainer.loop import TrainResult, run
from trainer.objectives import spec


def train(cfg: TrainConfig, console: Any = None, *, model: Any = None, tokenizer: Any = None,
          **objective_args: Any) -> TrainResult:
    """Train as ``cfg`` says; ``objective_args`` go to the objective (e.g. DPO's ``ref_model``). Returns where the
    model and metrics are and why it stopped."""
    return run(cfg, spec(cfg.objective).build(cfg, **objective_args), console, model=model, tokenizer=tokenizer)
