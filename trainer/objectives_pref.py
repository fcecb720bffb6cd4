"""SimPO and ORPO: preference pairs, no reference model.

Both score an answer by its mean token log-prob under the policy alone (``Spec.average``), so the loop runs no
reference pass, reads no cache and keeps no frozen copy: one forward per step, as SFT. Metrics carry TRL's names
(CPOTrainer with ``loss_type="simpo"``, ORPOTrainer): ``rewards/*`` are β times the mean log-probs.
"""

from __future__ import annotations

import torch

from trainer.config import TrainConfig
from trainer.loop import Objective, Policy
from trainer.losses import chosen_nll, log1mexp, odds_ratio_loss, simpo_loss
from trainer.packing import PackedBatch


def mean_logps(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected mean token log-probs from completion-major sums (chosen rows, then rejected)."""
    b = sums.numel() // 2
    avg = sums / counts.clamp(min=1)
    return avg[:b], avg[b:]


def reward_metrics(beta: float, avg_w: torch.Tensor, avg_l: torch.Tensor, rows: int) -> dict[str, float]:
    """TRL's reward metrics for reference-free objectives (this share's part of the micro-batch means)."""
    with torch.no_grad():
        r_w, r_l = beta * avg_w, beta * avg_l
        return {"rewards/chosen": r_w.sum().item() / rows, "rewards/rejected": r_l.sum().item() / rows,
                "rewards/accuracies": (r_w > r_l).float().sum().item() / rows,
                "rewards/margins": (r_w - r_l).sum().item() / rows,
                "logps/chosen": avg_w.sum().item() / rows, "logps/rejected": avg_l.sum().item() / rows}


class SimPOObjective(Objective):
    name = "simpo"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = policy(batch)
        avg_w, avg_l = mean_logps(sums.float(), counts)
        rows = batch.total_rows
        loss = simpo_loss(avg_w, avg_l, self.cfg.beta, self.cfg.simpo_gamma).sum() / rows
        return loss, {"loss": loss.item(), **reward_metrics(self.cfg.beta, avg_w, avg_l, rows)}


class ORPOObjective(Objective):
    name = "orpo"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sums, counts = policy(batch)
        sums = sums.float()
        b = sums.numel() // 2
        avg_w, avg_l = mean_logps(sums, counts)
        rows = batch.total_rows
        # NLL on the chosen answers' tokens, pooled over the whole micro-batch (SFT's loss)
        nll = chosen_nll(sums[:b], counts.new_tensor([batch.total_tokens[0]]))
        ratio = odds_ratio_loss(avg_w, avg_l)
        loss = nll + self.cfg.beta * ratio.sum() / rows
        with torch.no_grad():
            log_odds = (avg_w - avg_l) - (log1mexp(avg_w) - log1mexp(avg_l))
        return loss, {"loss": loss.item(), "nll_loss": nll.item(),
                      "log_odds_ratio": -ratio.detach().sum().item() / rows,  # TRL logs mean log σ(log odds)
                      "log_odds_chosen": log_odds.sum().item() / rows,
                      **reward_metrics(self.cfg.beta, avg_w, avg_l, rows)}
