"""Every training objective, declared once: what it needs and which settings it reads.

The trainer, ``prefloop train``/``prefloop sft`` and the loop (``[train] objective``) read these declarations
instead of lists and branches:

- ``reference``: whether the loss compares with the starting model. A reference-free objective runs no reference
  pass, reads no cache and keeps no frozen copy.
- ``data``: what one training item is: ``pairs`` (a prompt with a chosen and a rejected answer), ``labelled``
  (a prompt with one answer marked desirable or undesirable) or ``text`` (a prompt with its response).
- ``average``: whether log-probs are the mean over the answer's tokens (``True``), the sum (``False``), or as the
  ``logp_average`` setting says (``None``).
- ``whole_batch``: whether the loss reads a statistic of the whole micro-batch (KTO's z₀), so the micro-batch
  cannot run in token-capped pieces (``max_tokens_per_batch``).
- ``settings``: the ``TrainConfig`` fields (declared with ``setting(...)`` like every other) only this objective
  and the others naming them read; the flags of the others are hidden from a command fixed to one objective.

Adding an objective is one module (a ``trainer.loop.Objective`` whose ``loss`` calls a pure function of
``trainer.losses``) and one line here. This module imports nothing heavy, so ``--help`` stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

DATA_KINDS = ("pairs", "labelled", "text")


@dataclass(frozen=True)
class Spec:
    name: str
    target: str                    # "module:Class" of the ``Objective``
    help: str
    data: str                      # one of DATA_KINDS
    reference: bool
    average: bool | None
    settings: tuple[str, ...] = ()
    whole_batch: bool = False

    def build(self, cfg: Any, **kwargs: Any) -> Any:
        """The objective for ``cfg`` (imports its module, and torch with it)."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)(cfg, **kwargs)

    def averages(self, cfg: Any) -> bool:
        return cfg.logp_average if self.average is None else self.average


OBJECTIVES: dict[str, Spec] = {s.name: s for s in (
    Spec("dpo", "trainer.dpo:DPOObjective", "DPO and its family (loss_type), with RPO's NLL term (rpo_alpha)",
         data="pairs", reference=True, average=None,
         settings=("beta", "loss_type", "label_smoothing", "rpo_alpha", "logp_average", "reference",
                   "ref_model")),
    Spec("simpo", "trainer.objectives_pref:SimPOObjective", "SimPO: length-normalised margin with a target gap γ, "
         "no reference", data="pairs", reference=False, average=True, settings=("beta", "simpo_gamma")),
    Spec("orpo", "trainer.objectives_pref:ORPOObjective", "ORPO: NLL on the chosen answer + β·odds-ratio term, no "
         "reference (SFT and preference in one stage)", data="pairs", reference=False, average=True,
         settings=("beta",)),
    Spec("kto", "trainer.kto:KTOObjective", "KTO: single answers labelled desirable or undesirable",
         data="labelled", reference=True, average=False,
         settings=("beta", "desirable_weight", "undesirable_weight", "reference", "ref_model"),
         whole_batch=True),
    Spec("sft", "trainer.sft:SFTObjective", "supervised fine-tuning: NLL on the responses", data="text",
         reference=False, average=False),
)}


def spec(name: str) -> Spec:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}") from None


def settings_not_for(name: str) -> tuple[str, ...]:
    """The objective settings that ``name`` does not read (hidden from its command's flags)."""
    own = set(spec(name).settings)
    return tuple(dict.fromkeys(s for o in OBJECTIVES.values() for s in o.settings if s not in own))

