"""Optimizer and learning-rate schedule, with the same shapes as Hugging Face's ``get_scheduler``."""

from __future__ import annotations

import math
from typing import Any

import torch


def make_optimizer(model: Any, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (β1 0.9, β2 0.999, ε 1e-8) over trainable weights; biases and norms get no weight decay.

    Fused (one kernel over all the weights, as Hugging Face's Trainer, and so TRL, has done by default since torch
    2.8) where the weights' device has the kernel: torch otherwise steps CPU weights one tensor at a time (a dozen
    small ops per tensor) and GPU weights in foreach groups (several kernels per group)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in _get_fused_kernels_supported_devices() and p.is_floating_point()
                for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warmup, then the schedule."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, *, warmup: int, total: int,
                   schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup=warmup, total=total, schedule=schedule))


def retarget(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, *, lr: float,
             weight_decay: float) -> None:
    """After loading the state of a run with other settings (``--resume-changed``): the new peak learning rate,
    schedule and weight decay apply from the resumed step on (the loaded state would keep the old ones)."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    optimizer.param_groups[0]["weight_decay"] = weight_decay  # make_optimizer's first group is the decayed one
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
