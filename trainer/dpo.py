"""DPO: the objective plugged into the shared loop, and ``train(cfg)``.

Per packed batch: policy log-probs of chosen and rejected by the fast path; reference log-probs from the on-disk
cache (default) or the starting model kept in memory (with LoRA: the same model with its adapter off, no copy);
the chosen loss of ``trainer.losses``; TRL's metrics.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.data import load_pairs  # noqa: F401 - bench/train.py and bench/alignment.py import it from here
from trainer.loop import Policy, TrainResult
from trainer.losses import LOSS_TYPES, chosen_nll, logratio_margin, preference_loss
from trainer.packing import PackedBatch
from trainer.refcache import RefLogps
from trainer.reference import Referenced


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
    if LOSS_TYPES[cfg.loss_type].per_token_margin and not cfg.logp_average:  # IPO (TRL, the IPO authors)
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


class DPOObjective(Referenced):
    name = "dpo"

    @property
    def ref(self) -> RefLogps | None:
        """The cached reference log-probs (after ``prepare``; None with an in-memory reference)."""
        return self.reference.cache

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts, ref_sums = self.reference.logps(policy, batch)
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
    """Run the objective ``cfg.objective`` names (DPO by default) as ``cfg`` says; returns where the model and
    metrics are and why it stopped. ``ref_model``: DPO's reference given in memory."""
    from trainer.train import train as train_objective

    extra = {"ref_model": ref_model} if ref_model is not None else {}
    return train_objective(cfg, console, model=model, tokenizer=tokenizer, **extra)
