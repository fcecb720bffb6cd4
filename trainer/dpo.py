"""DPO: the objective plugged into the shared loop, and ``train(cfg)``.

Per packed batch: policy log-probs of chosen and rejected by the fast path; reference log-probs from the on-disk
cache (default) or the starting model kept in memory (with LoRA: the same model with its adapter off, no copy);
the chosen loss of ``trainer.losses``; TRL's metrics.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from trainer.config import TrainConfig
from trainer.data import TrainError, TrainItem, load_data, load_pairs
from trainer.distributed import Dist
from trainer.logps import packed_logps
from trainer.lora import quantization_key
from trainer.loop import Objective, Policy, TrainResult, run
from trainer.losses import chosen_nll, logratio_margin, preference_loss
from trainer.packing import PackedBatch
from prefloop.progress import Progress
from trainer.refcache import RefLogps, load_or_compute, model_digest
from trainer.tokenize import Example


def dpo_loss(cfg: TrainConfig, sums: torch.Tensor, counts: torch.Tensor, ref_sums: torch.Tensor, *,
             rows: int | None = None, chosen_tokens: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and TRL metrics from per-sequence log-prob sums (completion-major: chosen then rejected).

    ``rows`` and ``chosen_tokens``: the pairs and chosen tokens of the whole micro-batch when these sums are one
    process's share of it (default: they are all of it). Loss and metrics are then this share's part of the
    whole-batch means, which add up over the processes."""
    b = sums.numel() // 2
    rows = rows or b
    n_w, n_l = counts[:b], counts[b:]
    pi_w, pi_l, ref_w, ref_l = sums[:b], sums[b:], ref_sums[:b], ref_sums[b:]
    if cfg.logp_average:  # mean token log-prob (the seed recipe) instead of the sum (the DPO paper)
        pi_w, pi_l, ref_w, ref_l = pi_w / n_w, pi_l / n_l, ref_w / n_w, ref_l / n_l
    if cfg.loss_type == "ipo" and not cfg.logp_average:  # IPO's margin is per token (TRL, IPO authors)
        h = (pi_w - ref_w) / n_w - (pi_l - ref_l) / n_l
    else:
        h = logratio_margin(pi_w, pi_l, ref_w, ref_l)
    loss = preference_loss(cfg.loss_type, h, cfg.beta, cfg.label_smoothing).sum() / rows
    metrics: dict[str, float] = {}
    if cfg.rpo_alpha > 0:
        nll = chosen_nll(sums[:b], n_w if chosen_tokens is None else n_w.new_tensor([float(chosen_tokens)]))
        loss = loss + cfg.rpo_alpha * nll
        metrics["nll"] = nll.item()
    with torch.no_grad():
        r_w = cfg.beta * (pi_w - ref_w)
        r_l = cfg.beta * (pi_l - ref_l)
        metrics.update({
            "loss": loss.item(),
            "rewards/chosen": r_w.sum().item() / rows,
            "rewards/rejected": r_l.sum().item() / rows,
            "rewards/accuracies": (r_w > r_l).float().sum().item() / rows,
            "rewards/margins": (r_w - r_l).sum().item() / rows,
            "logps/chosen": pi_w.sum().item() / rows,
            "logps/rejected": pi_l.sum().item() / rows,
        })
    return loss, metrics


class DPOObjective(Objective):
    name = "dpo"

    def __init__(self, cfg: TrainConfig, ref_model: Any = None) -> None:
        self.cfg = cfg
        self.ref: RefLogps | None = None
        self.ref_model = ref_model
        self.digest: str | None = None

    def load(self, cfg: TrainConfig) -> tuple[list[TrainItem], list[TrainItem] | None, list[str]]:
        return load_data(cfg, load_pairs, "preference data (a JSONL/JSON file, dataset folder or name)")

    def start(self, model: Any, dist: Dist) -> None:
        if self.ref_model is model:
            raise TrainError("the reference model is the policy object itself: its log-ratios would stay 0 and "
                             "DPO would not learn; pass a frozen copy or use reference = 'cached'")
        if self.cfg.reference == "cached":  # rank 0 hashes the unsharded weights; the others take its digest
            self.digest = dist.broadcast(model_digest(model, quantization_key(self.cfg)) if dist.is_main else None)
        elif self.ref_model is None and not self.cfg.lora_r:  # LoRA's reference is the adapter switched off
            self.ref_model = copy.deepcopy(model)
        if self.ref_model is not None:
            self.ref_model.eval().requires_grad_(False)

    def prepare(self, policy: Policy, tokenizer: Any, train: list[Example], held_out: list[Example], *,
                console: Any, should_stop: Callable[[], bool]) -> list[str]:
        if self.cfg.reference == "model":
            what = ("the same model with its LoRA adapter off (one more forward per step, no copy)" if policy.adapted
                    else "a frozen copy of the starting model (held in memory, one forward per step)")
            return [f"reference: {what}"]
        examples = train + held_out
        dist = policy.dist
        with Progress(console, None, "reference log-probs", unit="pairs", enabled=dist.is_main) as ticker, policy.base():
            ref, computed, path = load_or_compute(
                policy.module, examples, tokenizer.pad_token_id, batch_size=max(16, 2 * self.cfg.batch_size),
                dtype=self.cfg.dtype, model_hash=self.digest, device=dist.device, dist=dist, progress=ticker,
                should_stop=should_stop)
        self.ref = ref
        return [f"reference log-probs: {len(examples) - computed} read from the cache, {computed} computed and "
                f"cached ({path})"]

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.ref is not None:
            ref_sums = None
        elif self.ref_model is not None:
            with torch.no_grad():
                ref_sums, _ = packed_logps(self.ref_model, batch)
        else:
            with torch.no_grad(), policy.base():
                ref_sums, _ = policy(batch)
        sums, counts = policy(batch)
        if ref_sums is None:
            ref_sums = self.ref.lookup(batch.ids)[0].to(sums.device)
        return dpo_loss(self.cfg, sums.float(), counts, ref_sums.float(), rows=batch.total_rows,
                        chosen_tokens=batch.total_tokens[0])

    def zero_margin_loss(self) -> float:
        return float(preference_loss(self.cfg.loss_type, torch.zeros(1), self.cfg.beta, self.cfg.label_smoothing))

    def is_stuck(self, row: dict[str, float]) -> bool:
        if self.cfg.rpo_alpha > 0:
            return False
        still = max(abs(row["rewards/chosen"]), abs(row["rewards/rejected"])) < 1e-4
        return still and abs(row["loss"] - self.zero_margin_loss()) < 1e-4

    def stuck_message(self, steps: int) -> str:
        z = self.zero_margin_loss()
        at = "ln 2" if abs(z - math.log(2)) < 1e-6 else "its zero-margin value"
        return (f"the loss has stayed at {at} = {z:.4f} with zero rewards for {steps} steps: the policy is not "
                f"moving away from the reference. Check that the reference is not the policy itself, that beta "
                f"({self.cfg.beta}) is not tiny, and that the learning rate ({self.cfg.lr}) is large enough.")


def train(cfg: TrainConfig, console: Any = None, *, model: Any = None, tokenizer: Any = None,
          ref_model: Any = None) -> TrainResult:
    """Run DPO as ``cfg`` says; returns where the model and metrics are and why it stopped."""
    return run(cfg, DPOObjective(cfg, ref_model=ref_model), console, model=model, tokenizer=tokenizer)
