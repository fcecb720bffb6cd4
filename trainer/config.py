"""Training settings: one dataclass for DPO and SFT, checked when it is built so a bad value fails before any
model or data is loaded.

Filled from the ``[train]`` section of a TOML file, ``--set key=value`` overrides and command-line flags
(``trainer.cli``), or directly in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefloop.config import ConfigError, load_section

LOSS_TYPES = ("sigmoid", "cdpo", "ipo", "hinge", "robust")
SCHEDULES = ("constant", "linear", "cosine")
REFERENCES = ("cached", "model")
PROMPT_FORMATS = ("auto", "text", "chat", "alpaca")
DTYPES = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything a DPO (or SFT) run needs. Defaults follow TRL's DPOConfig where it has one."""

    model: str = "smollm2"                # HF folder, Hub name, .gguf file or the embedded alias
    data: str = ""                        # preference pairs (DPO) or prompt/response rows (SFT)
    output_dir: str = "runs/train"
    eval_data: str | None = None          # held-out pairs; else `eval_split` of `data` is held out
    eval_split: float = 0.0               # fraction of `data` held out for evaluation (0: no eval)
    # objective
    beta: float = 0.1                     # DPO's β: strength of the KL anchor to the reference
    loss_type: str = "sigmoid"            # sigmoid | cdpo | ipo | hinge | robust
    label_smoothing: float = 0.0          # ε for cdpo and robust: assumed rate of flipped labels
    rpo_alpha: float = 0.0                # weight of an NLL term on the chosen answer (RPO); 0 = off
    logp_average: bool = False            # mean of token log-probs (the seed recipe) instead of the sum (DPO paper)
    reference: str = "cached"             # cached: log-probs computed once, on disk | model: frozen copy in memory
    # optimisation
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: str = "linear"              # constant | linear | cosine (after warmup)
    batch_size: int = 8                   # pairs per micro-batch
    grad_accum: int = 1                   # micro-batches per optimizer step
    max_grad_norm: float = 1.0            # 0 disables clipping
    epochs: float = 1.0
    max_steps: int = 0                    # > 0 overrides epochs
    seed: int = 42
    dtype: str = "fp32"                   # fp32 | bf16 (autocast; weights stay fp32)
    device: str = "auto"                  # auto (a CUDA GPU when present, else CPU) | cpu | cuda | cuda:N | mps
    gradient_checkpointing: bool = False
    # data
    max_length: int = 1024                # prompt + completion tokens per sequence
    max_prompt_length: int | None = None  # prompts longer than this are skipped (None: only max_length applies)
    prompt_format: str = "auto"           # auto (follow the data) | text | chat | alpaca
    group_by_length: bool = True          # batch pairs of similar length (less padding); order stays random
    shuffle: bool = True
    # bookkeeping
    eval_every: int = 0                   # optimizer steps between evaluations (0: only at the end when eval data)
    save_every: int = 0                   # optimizer steps between checkpoints (0: none until the end)
    keep_checkpoints: int = 2
    log_every: int = 1
    resume: bool = False                  # continue from the newest checkpoint in output_dir
    stuck_steps: int = 20                 # warn when the loss sits at its zero-margin value this many steps
    threads: int = 0                      # torch threads (0: torch's default)
    live: bool = True                     # rich live view on a terminal
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes copied into the run record

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings that cannot train, naming the setting and the reason."""
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"train.{name}: {why}")

        if self.beta <= 0:
            bad("beta", f"must be > 0, got {self.beta} (β = 0 removes the KL anchor and DPO diverges)")
        for name, value, allowed in (("loss_type", self.loss_type, LOSS_TYPES), ("schedule", self.schedule, SCHEDULES),
                                     ("reference", self.reference, REFERENCES),
                                     ("prompt_format", self.prompt_format, PROMPT_FORMATS),
                                     ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                bad(name, f"{value!r} is not one of {', '.join(allowed)}")
        if not 0.0 <= self.label_smoothing < 0.5:
            bad("label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        if self.rpo_alpha < 0:
            bad("rpo_alpha", f"must be >= 0, got {self.rpo_alpha}")
        if self.lr <= 0:
            bad("lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.eval_split < 1.0:
            bad("eval_split", f"must be in [0, 1), got {self.eval_split}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for name in ("batch_size", "grad_accum", "max_length", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "max_steps", "eval_every", "save_every", "stuck_steps", "threads"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not (self.device in ("auto", "cpu", "mps") or self.device.split(":")[0] == "cuda"):
            bad("device", f"{self.device!r} is not auto, cpu, cuda, cuda:N or mps")
        if self.max_grad_norm < 0:
            bad("max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        if self.epochs <= 0 and self.max_steps <= 0:
            bad("epochs", "set epochs > 0 or max_steps > 0")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length < self.max_length:
            bad("max_prompt_length", f"must be in [1, max_length={self.max_length}), got {self.max_prompt_length}")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None,
                      **values: Any) -> TrainConfig:
    """A ``TrainConfig`` from a TOML file's ``[train]`` section, command-line ``values`` (flags that were given)
    and ``key=value`` overrides, merged as every command merges them (``prefloop.config.load_section``)."""
    return load_section(TrainConfig, "train", path, overrides, values)
