"""KTO: single answers labelled desirable or undesirable (Ethayarajh et al., 2024), against a reference model.

Each item is packed as ``[prompt | answer | another prompt's answer]``: the second, mismatched completion gives
the KL estimate z₀ (TRL's way: the mean policy/reference log-ratio of mismatched prompt–answer pairs in the
micro-batch, clamped at 0, without gradient). The mismatched answer is fixed when the data is read (the next
item with a different prompt), so its reference log-probs are cached with the rest. Metrics carry TRL's names
(``kl``, ``rewards/chosen`` for the desirable answers, ``rewards/rejected`` for the undesirable ones).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.data import TrainItem
from trainer.loop import Policy
from trainer.losses import kto_loss, kto_reference_point
from trainer.packing import PackedBatch
from trainer.reference import Referenced


def with_mismatched(items: list[TrainItem]) -> list[TrainItem]:
    """Each item with a second completion: the answer of the next item whose prompt differs (cyclically), the
    mismatched pair TRL's KTO estimates the KL term from. Pairs split into two rows have the same prompt side by
    side, hence the search for a different prompt."""
    keys = [json.dumps(it.prompt, sort_keys=True) for it in items]
    n = len(items)
    out = []
    for i, it in enumerate(items):
        j = next((i + s) % n for s in range(1, n) if keys[(i + s) % n] != keys[i]) if n > 1 else i
        out.append(TrainItem(it.id, it.prompt, [it.completions[0], items[j].completions[0]], it.prompt_format,
                             it.meta, label=it.label))
    return out


class KTOObjective(Referenced):
    name = "kto"
    counted = 1  # tokens/s counts the labelled answers; the mismatched ones only estimate z₀ (TRL's count too)

    def __init__(self, cfg: TrainConfig, ref_model: Any = None) -> None:
        super().__init__(cfg, ref_model)
        self.labels: dict[str, bool] = {}

    def load(self, cfg: TrainConfig) -> tuple[list[TrainItem], list[TrainItem] | None, list[str]]:
        train, held, notes = super().load(cfg)
        train = with_mismatched(train)
        held = with_mismatched(held) if held else held
        self.labels = {it.id: bool(it.label) for it in train + (held or [])}
        return train, held, notes

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        # the mismatched answers only estimate z₀, which is detached: scored after the trained forward, without
        # gradient (as TRL's KL pass), rather than trained through and discarded
        sums, _, ref = self.reference.logps(policy, batch, no_grad_from=1)
        sums, ref = sums.float(), ref.float()
        b = sums.numel() // 2
        logratio = sums[:b] - ref[:b]
        mismatched = (sums[b:] - ref[b:]).detach()
        desirable = torch.tensor([self.labels[i] for i in batch.ids], device=sums.device)
        n_d = desirable.sum().item()
        # z₀ over the whole micro-batch: every process adds its share (a process whose share is empty runs one
        # row for the collectives' sake, which must not count: rows go to ranks round-robin)
        real = float(policy.dist.rank < batch.total_rows)
        whole = policy.dist.sum({"kl": real * mismatched.sum().item(), "d": real * n_d, "u": real * (b - n_d)})
        z0 = kto_reference_point(mismatched.new_tensor([whole["kl"] / batch.total_rows]))
        per = kto_loss(logratio, desirable, z0, self.cfg.beta, self.cfg.desirable_weight,
                       self.cfg.undesirable_weight)
        rows = batch.total_rows
        loss = per.sum() / rows
        with torch.no_grad():
            r = self.cfg.beta * logratio
            d, u = max(whole["d"], 1.0), max(whole["u"], 1.0)
            r_w, r_l = r[desirable].sum().item() / d, r[~desirable].sum().item() / u
            # ``kl`` and the per-side means are whole-batch values: this share's part is its row share of them
            share = b / rows
            metrics = {"loss": loss.item(), "kl": z0.item() * share,
                       "rewards/chosen": r_w, "rewards/rejected": r_l, "rewards/margins": r_w - r_l,
                       "logps/chosen": sums[:b][desirable].sum().item() / d,
                       "logps/rejected": sums[:b][~desirable].sum().item() / u,
                       "count/desirable": n_d / rows}
        return loss, metrics
