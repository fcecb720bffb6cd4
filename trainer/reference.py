"""The reference model's log-probs, for the objectives that declare they need it (``Spec.reference``).

Three ways, chosen by ``reference`` and LoRA: the on-disk cache (default: computed once before the first step,
keyed by the model's digest), a frozen copy of the starting model in memory, or, with LoRA, the same model with
its adapter off (no copy). A reference-free objective builds none of this: no pass, no cache, no copy.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from prefloop.progress import Progress
from trainer.config import TrainConfig
from trainer.data import TrainError
from trainer.distributed import Dist
from trainer.logps import packed_logps
from trainer.loop import Objective
from trainer.lora import quantization_key
from trainer.packing import PackedBatch
from trainer.refcache import RefLogps, load_or_compute, model_digest
from trainer.tokenize import Example


class Reference:
    def __init__(self, cfg: TrainConfig, model: Any = None) -> None:
        self.cfg = cfg
        self.cache: RefLogps | None = None
        self.model = model
        self.digest: str | None = None

    def start(self, model: Any, dist: Dist) -> None:
        """The loaded starting model, before LoRA or sharding: its digest (cached) or a frozen copy (model)."""
        if self.model is model:
            raise TrainError("the reference model is the policy object itself: its log-ratios would stay 0 and "
                             f"{self.cfg.objective.upper()} would not learn; pass a frozen copy or use "
                             "reference = 'cached'")
        if self.cfg.reference == "cached":  # rank 0 hashes the unsharded weights; the others take its digest
            self.digest = dist.broadcast(model_digest(model, quantization_key(self.cfg)) if dist.is_main else None)
        elif self.model is None and not self.cfg.lora_r:  # LoRA's reference is the adapter switched off
            self.model = copy.deepcopy(model)
        if self.model is not None:
            self.model.eval().requires_grad_(False)

    def prepare(self, policy: Any, tokenizer: Any, examples: list[Example], *, console: Any,
                should_stop: Callable[[], bool]) -> list[str]:
        """The cached reference log-probs of ``examples`` (read, or computed and cached), or a note on the
        in-memory reference."""
        if self.cfg.reference == "model":
            what = ("the same model with its LoRA adapter off (one more forward per step, no copy)" if policy.adapted
                    else "a frozen copy of the starting model (held in memory, one forward per step)")
            return [f"reference: {what}"]
        dist = policy.dist
        with Progress(console, None, "reference log-probs", unit="pairs", enabled=dist.is_main) as ticker, policy.base():
            self.cache, computed, path = load_or_compute(
                policy.module, examples, tokenizer.pad_token_id, batch_size=max(16, 2 * self.cfg.batch_size),
                dtype=self.cfg.dtype, model_hash=self.digest, device=dist.device, dist=dist, progress=ticker,
                should_stop=should_stop)
        return [f"reference log-probs: {len(examples) - computed} read from the cache, {computed} computed and "
                f"cached ({path})"]

    def forward(self, policy: Any, batch: PackedBatch) -> torch.Tensor | None:
        """Per-sequence reference sums computed now (in-memory reference), or None when they come from the
        cache (``lookup``, after the policy's forward)."""
        if self.cache is not None:
            return None
        with torch.no_grad():
            if self.model is not None:
                return packed_logps(self.model, batch)[0]
            with policy.base():
                return policy(batch)[0]

    def lookup(self, batch: PackedBatch, device: torch.device) -> torch.Tensor:
        assert self.cache is not None
        return self.cache.lookup(batch.ids)[0].to(device)

    def logps(self, policy: Any, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy sums, counts, reference sums) of one packed batch; the reference forward, when there is one,
        runs first and without gradients."""
        ref = self.forward(policy, batch)
        sums, counts = policy(batch)
        return sums, counts, (self.lookup(batch, sums.device) if ref is None else ref)


class Referenced(Objective):
    """An objective measured against the reference (DPO, KTO): the loaded model starts the reference (its digest
    keys the cache, or it is copied) and the reference pass runs before the first step, over every example."""

    def __init__(self, cfg: TrainConfig, ref_model: Any = None) -> None:
        self.cfg = cfg
        self.reference = Reference(cfg, ref_model)

    def start(self, model: Any, dist: Dist) -> None:
        self.reference.start(model, dist)

    def prepare(self, policy: Any, tokenizer: Any, train: list[Example], held_out: list[Example], *,
                console: Any, should_stop: Callable[[], bool]) -> list[str]:
        return self.reference.prepare(policy, tokenizer, train + held_out, console=console, should_stop=should_stop)
