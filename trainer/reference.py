"""The reference model's log-probs, for the objectives that declare they need it (``Spec.reference``).

Three ways, chosen by ``reference`` and LoRA: the on-disk cache (default: computed once before the first step,
keyed by the model's digest), a frozen copy of the starting model in memory, or, with LoRA, the same model with
its adapter off (no copy). With ``ref_model`` the reference is that model instead of the starting one (rounds of
DPO anchored to the SFT model): it is loaded beside the policy, its digest keys the cache (and it is freed once
the cache is filled) or it stays in memory frozen; the adapter-off path is never used, since the base is not the
reference. A reference-free objective builds none of this: no pass, no cache, no copy.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace
from typing import Any, Callable

import torch

from prefloop.progress import Progress
from trainer.config import TrainConfig, piece_tokens
from trainer.data import TrainError
from trainer.distributed import Dist
from trainer.attention import resolve as resolve_attention
from trainer.logps import PackedLM
from trainer.loop import Objective, pad_multiple
from trainer.lora import quantization_key
from trainer.packing import PackedBatch
from trainer.refcache import RefLogps, load_or_compute, model_digest
from trainer.tokenize import Example


class Reference:
    def __init__(self, cfg: TrainConfig, model: Any = None) -> None:
        self.cfg = cfg
        self.cache: RefLogps | None = None
        self.model = model
        self.module: PackedLM | None = None  # the reference model (when in memory) as it scores packed rows
        self.digest: str | None = None

    def start(self, model: Any, dist: Dist) -> None:
        """The loaded starting model, before LoRA or sharding: its digest (cached) or a frozen copy (model)."""
        if self.model is model:
            raise TrainError("the reference model is the policy object itself: its log-ratios would stay 0 and "
                             f"{self.cfg.objective.upper()} would not learn; pass a frozen copy or use "
                             "reference = 'cached'")
        if self.cfg.ref_model and self.model is None:  # another model than the starting one, frozen beside it
            self.model = load_reference(self.cfg, model, dist.device)
        if self.cfg.reference == "cached":  # rank 0 hashes the unsharded weights; the others take its digest
            keyed = self.model if self.cfg.ref_model else model
            self.digest = dist.broadcast(model_digest(keyed, quantization_key(self.cfg)) if dist.is_main else None)
        elif self.model is None and not self.cfg.lora_r:  # LoRA's reference is the adapter switched off
            self.model = copy.deepcopy(model)
        if self.model is not None:
            self.model.eval().requires_grad_(False)
            self.module = PackedLM(self.model, resolve_attention(self.cfg.attention, dist.device))

    def prepare(self, policy: Any, tokenizer: Any, examples: list[Example], *, console: Any,
                should_stop: Callable[[], bool]) -> list[str]:
        """The cached reference log-probs of ``examples`` (read, or computed and cached), or a note on the
        in-memory reference."""
        separate = bool(self.cfg.ref_model)
        if self.cfg.reference == "model":
            what = (f"{self.cfg.ref_model}, frozen (held in memory, one forward per step)" if separate
                    else "the same model with its LoRA adapter off (one more forward per step, no copy)"
                    if policy.adapted else "a frozen copy of the starting model (held in memory, one forward per step)")
            return [f"reference: {what}"]
        dist = policy.dist
        # the starting model's log-probs come from the policy before its first step (LoRA: adapter off); another
        # reference model's from that model, which is then freed: the cache holds all the steps need
        module = self.module if separate else policy.module
        base = contextlib.nullcontext() if separate else policy.base()
        with Progress(console, None, "reference log-probs", unit="pairs", enabled=dist.is_main) as ticker, base:
            self.cache, computed, path = load_or_compute(
                module, examples, tokenizer.pad_token_id, batch_size=max(16, 2 * self.cfg.batch_size),
                dtype=self.cfg.dtype, model_hash=self.digest, device=dist.device, dist=dist, progress=ticker,
                should_stop=should_stop, max_tokens=piece_tokens(self.cfg, dist.device),
                multiple_of=pad_multiple(dist.device))
        if separate:
            self.model = self.module = None
        whose = f" of {self.cfg.ref_model}" if separate else ""
        return [f"reference log-probs{whose}: {len(examples) - computed} read from the cache, {computed} computed "
                f"and cached ({path})"]

    def forward(self, policy: Any, batch: PackedBatch) -> torch.Tensor | None:
        """Per-sequence reference sums computed now (in-memory reference), or None when they come from the
        cache (``lookup``, after the policy's forward)."""
        if self.cache is not None:
            return None
        with torch.no_grad():
            if self.module is not None:
                return self.module(batch)[0]
            with policy.base():
                return policy(batch)[0]

    def lookup(self, batch: PackedBatch, device: torch.device) -> torch.Tensor:
        assert self.cache is not None
        return self.cache.lookup(batch.ids)[0].to(device)

    def logps(self, policy: Any, batch: PackedBatch,
              no_grad_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy sums, counts, reference sums) of one packed batch; the reference forward, when there is one,
        runs first and without gradients. ``no_grad_from``: the policy scores completions from this index on
        without gradient (``Policy``)."""
        ref = self.forward(policy, batch)
        sums, counts = policy(batch, no_grad_from)
        return sums, counts, (self.lookup(batch, sums.device) if ref is None else ref)


def load_reference(cfg: TrainConfig, policy: Any, device: torch.device) -> Any:
    """``cfg.ref_model`` loaded as the starting model is (same dtype, same quantization), on ``device``. Its
    log-probs are compared with the policy's token by token, so its vocabulary must be the policy's."""
    from trainer.load import load_model, resolve_model

    named = replace(cfg, model=cfg.ref_model)
    try:
        model = load_model(named, resolve_model(named, None), device)
    except TrainError as exc:
        raise TrainError(f"ref_model = {cfg.ref_model!r} (the reference model): {exc}") from None
    mine, theirs = policy.get_input_embeddings().num_embeddings, model.get_input_embeddings().num_embeddings
    if mine != theirs:
        raise TrainError(f"ref_model = {cfg.ref_model!r}: its vocabulary has {theirs} tokens, the starting model's "
                         f"({cfg.model}) {mine}; the reference must use the starting model's tokenizer (pass the "
                         "SFT model the starting model was trained from, or leave ref_model empty)")
    if not cfg.qlora:
        model.to(device)
    return model


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
