"""Preference losses as pure functions of log-probability tensors.

Symbols follow the DPO paper (Rafailov et al., 2023): for a prompt x, chosen answer y_w and rejected answer y_l,

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]

is the difference of log-ratios (the implicit reward margin divided by β). Every function takes per-pair tensors
of shape ``(batch,)`` and returns the per-pair loss; the trainer averages over the batch. These are the same
formulas TRL 1.16 uses for the same names, so a run here and a TRL run on the same batch give the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def logratio_margin(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """h = (log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def sigmoid_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (paper eq. 7): −log σ(β·h)."""
    return -F.logsigmoid(beta * h)


def cdpo_loss(h: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """Conservative DPO: labels flipped with probability ε, so −(1−ε)·log σ(βh) − ε·log σ(−βh)."""
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def robust_loss(h: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al., 2024): the unbiased estimate under label noise ε,
    [−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1 − 2ε)."""
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def hinge_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-style hinge: max(0, 1 − β·h)."""
    return torch.relu(1 - beta * h)


def ipo_loss(h_per_token: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (Azar et al., 2023, eq. 17) with τ = β: (h − 1/(2τ))².

    ``h_per_token`` is built from log-ratios divided by each completion's token count, as TRL does and as the IPO
    authors confirmed; the caller passes that normalised margin.
    """
    return (h_per_token - 1 / (2 * beta)) ** 2


@dataclass(frozen=True)
class LossType:
    """How ``dpo_loss`` feeds one of the functions above: ``smoothing`` takes ε (label_smoothing) as its third
    argument; ``per_token_margin`` builds h from log-ratios divided by each completion's token count (IPO)."""

    fn: Callable[..., torch.Tensor]
    smoothing: bool = False
    per_token_margin: bool = False


LOSS_TYPES: dict[str, LossType] = {
    "sigmoid": LossType(sigmoid_loss),
    "cdpo": LossType(cdpo_loss, smoothing=True),
    "ipo": LossType(ipo_loss, per_token_margin=True),
    "hinge": LossType(hinge_loss),
    "robust": LossType(robust_loss, smoothing=True),
}


def preference_loss(loss_type: str, h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Dispatch by name (``LOSS_TYPES``); ``h`` is already length-normalised where the type says so."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    kind = LOSS_TYPES[loss_type]
    return kind.fn(h, beta, label_smoothing) if kind.smoothing else kind.fn(h, beta)


def chosen_nll(chosen_logp_sums: torch.Tensor, chosen_token_counts: torch.Tensor) -> torch.Tensor:
    """RPO's NLL term: −(Σ_tokens log π_θ(y_w,t | x, y_w,<t)) / (number of chosen tokens), pooled over the batch."""
    return -chosen_logp_sums.sum() / chosen_token_counts.sum().clamp(min=1)


# Reference-free objectives: the policy's own (length-normalised) log-probs are the reward.

def simpo_loss(avg_chosen: torch.Tensor, avg_rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al., 2024, eq. 6): −log σ(β/|y_w|·log π(y_w) − β/|y_l|·log π(y_l) − γ).

    The reward is β times the *mean* token log-prob, the quantity generation ranks answers by, so no reference is
    needed and longer answers gain nothing from their length; γ asks the chosen answer to win by a margin.
    ``avg_*`` are the mean token log-probs."""
    return -F.logsigmoid(beta * (avg_chosen - avg_rejected) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate on both sides of −ln 2 (Mächler, 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def odds_ratio_loss(avg_chosen: torch.Tensor, avg_rejected: torch.Tensor) -> torch.Tensor:
    """ORPO's preference term (Hong et al., 2024, eqs. 4 and 7): −log σ(log odds(y_w) − log odds(y_l)), where
    odds(y) = P(y) / (1 − P(y)) with P the mean token likelihood, so log odds = log P − log(1 − P).

    Beside an NLL on y_w it lowers y_l's odds relative to y_w's; the NLL keeps the model near the data, which is
    why ORPO needs no reference and replaces SFT followed by DPO with one stage."""
    log_odds = (avg_chosen - avg_rejected) - (log1mexp(avg_chosen) - log1mexp(avg_rejected))
    return -F.logsigmoid(log_odds)


def kto_loss(logratio: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al., 2024, eq. 7), per answer: λ_D·(1 − σ(β(r − z₀))) for a desirable answer and
    λ_U·(1 − σ(β(z₀ − r))) for an undesirable one, where r = log π_θ(y|x) − log π_ref(y|x).

    Prospect theory: an answer is judged against a reference point z₀ (the policy's KL from the reference,
    estimated on mismatched prompt–answer pairs and not differentiated), and the sigmoid makes gains and losses
    saturate, so single thumbs-up/down labels suffice. λ_D, λ_U rebalance unequal numbers of each."""
    gain = desirable_weight * (1 - torch.sigmoid(beta * (logratio - z0)))
    loss = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratio)))
    return torch.where(desirable, gain, loss)


def kto_reference_point(kl_logratios: torch.Tensor) -> torch.Tensor:
    """z₀ as TRL estimates it: the mean log-ratio of mismatched (prompt, answer) pairs, clamped at 0 (a KL is not
    negative) and detached (no gradient flows through the reference point)."""
    return kl_logratios.mean().detach().clamp(min=0)
