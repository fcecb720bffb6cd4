"""Training settings: one dataclass for every objective (``trainer.objectives``), checked when it is built so a
bad value fails before any model or data is loaded.

Filled from the ``[train]`` section of a TOML file, ``--set key=value`` overrides and command-line flags
(``trainer.cli``), or directly in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.config import ConfigError, check_choices, load_section, section, setting
from prefloop.models import DTYPES, normalize_dtype
from prefloop.templates import PROMPT_FORMATS
from trainer.attention import ATTENTIONS
from trainer.objectives import OBJECTIVES

LOSS_TYPES = ("sigmoid", "cdpo", "ipo", "hinge", "robust")
SCHEDULES = ("constant", "linear", "cosine")
REFERENCES = ("cached", "model")
DISTRIBUTED = ("ddp", "fsdp")
# A CPU trains a micro-batch in pieces of at most this many packed tokens unless told otherwise: the gradients are
# the same (up to summation order), the activations held for the backward are a piece's, and the smaller tensors
# stay in cache (bench/objectives.py --both-caps: no slower on one thread, 0.83x the peak RSS on the tiny Llama).
# A GPU wants the whole micro-batch in one forward.
CPU_PIECE_TOKENS = 512


@section("train")
@dataclass
class TrainConfig:
    """Everything a DPO (or SFT) run needs. Defaults follow TRL's DPOConfig where it has one."""

    model: str = setting("smollm2", "the SFT model: a folder, Hub name, .gguf file or 'smollm2' (the embedded "
                                    "SmolLM2-135M-Instruct)")
    data: str = setting("", "preference pairs (DPO) or prompt/response rows (SFT): JSONL/JSON/dataset",
                        runtime=True)
    output_dir: str = setting("runs/train", "where metrics, checkpoints and the final model go", runtime=True,
                              flag="--output", short="-o", aliases=("--output-dir",))
    eval_data: str | None = setting(None, "held-out pairs (else --eval-split of --data)", runtime=True)
    eval_split: float = setting(0.0, "fraction of --data held out for evaluation (0: no eval)")
    # objective (trainer.objectives declares which of the settings below each one reads)
    objective: str = setting("dpo", "what to train for: " + "; ".join(f"{s.name} ({s.help})"
                                                                       for s in OBJECTIVES.values()),
                             choices=tuple(OBJECTIVES))
    beta: float = setting(0.1, "β: DPO/KTO's strength of the KL anchor to the reference, SimPO's reward scale, "
                               "ORPO's weight λ of the odds-ratio term (> 0)")
    loss_type: str = setting("sigmoid", "preference loss", choices=LOSS_TYPES)
    label_smoothing: float = setting(0.0, "ε for cdpo and robust: assumed rate of flipped labels")
    # RPO's NLL term keeps the chosen answers likely, so the preference moves and the skill stays (plain DPO
    # lowers both sides' likelihood); chosen with lr on the seed's validation rows by bench/alignment.py
    rpo_alpha: float = setting(1.0, "weight of an NLL term on the chosen answer (RPO); 0 = plain DPO")
    logp_average: bool = setting(False, "mean of token log-probs (the seed recipe) instead of the sum (DPO paper)")
    simpo_gamma: float = setting(0.5, "SimPO's target reward margin γ (TRL's simpo_gamma)")
    desirable_weight: float = setting(1.0, "KTO's λ_D: weight of the desirable answers' losses")
    undesirable_weight: float = setting(1.0, "KTO's λ_U: weight of the undesirable answers' losses (raise the "
                                             "rarer side's weight when the labels are unbalanced)")
    reference: str = setting("cached", "the reference model: cached (log-probs computed once, on disk) or model "
                                       "(a frozen copy in memory)", choices=REFERENCES)
    ref_model: str = setting("", "the reference is this model (folder, Hub name, .gguf or 'smollm2') instead of the "
                                 "starting model, e.g. the SFT model when training goes on from a DPO-trained one; "
                                 "it must share the starting model's tokenizer (empty: the starting model)")
    # optimisation
    lr: float = setting(5e-6, "peak learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay (not on biases and norms)")
    warmup_steps: int = setting(0, "linear warmup steps")
    warmup_ratio: float = setting(0.0, "warmup as a share of the steps (when warmup_steps is 0)")
    schedule: str = setting("linear", "learning-rate schedule after warmup", choices=SCHEDULES)
    batch_size: int = setting(8, "pairs (or examples) per micro-batch")
    max_tokens_per_batch: int | None = setting(None, "cap on the tokens one forward packs (rows × longest row): a "
                                                  "micro-batch over it runs in pieces, with the same loss and "
                                                  f"gradients (0: no cap; default: {CPU_PIECE_TOKENS} on a CPU, "
                                                  "none on a GPU)", runtime=True)
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 disables clipping)")
    epochs: float = setting(1.0, "passes over the data")
    max_steps: int = setting(0, "optimizer steps (> 0 overrides --epochs)")
    seed: int = setting(42, "random seed (data order and initialisation)")
    dtype: str = setting("fp32", "compute dtype: bf16 autocast (weights stay fp32) or fp32", choices=DTYPES)
    device: str = setting("auto", "auto (a CUDA GPU when present, else the CPU) | cpu | cuda | cuda:N | mps",
                          runtime=True)
    attention: str = setting("auto", "how packed [prompt | chosen | rejected] rows attend: dense (a 4-D mask, "
                                     "the reference), flex (a flex-attention block mask: no L x L tensor, masked "
                                     "blocks skipped; needs CUDA to train) or auto (dense until bench/gpu_check.sh has measured flex on a GPU)",
                             choices=ATTENTIONS, runtime=True)
    gradient_checkpointing: bool = setting(False, "recompute activations in backward (less memory, same "
                                                  "losses)", runtime=True)
    # LoRA / QLoRA (the peft library: pip install 'prefloop[lora]')
    lora_r: int = setting(0, "LoRA rank: train low-rank adapters instead of every weight (0: full fine-tune; "
                             "16 is a common choice)")
    lora_alpha: float | None = setting(None, "LoRA scale numerator: updates are scaled by alpha / r "
                                             "(default 2 × lora_r)")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input (0 keeps runs exactly reproducible)")
    lora_targets: list[str] = setting(help="module names to adapt, e.g. q_proj,v_proj (default: every linear "
                                           "layer of the decoder, not the LM head)", factory=list)
    qlora: bool = setting(False, "QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA only); needs lora_r")
    # several processes (torchrun)
    distributed: str = setting("ddp", "with several processes: ddp (a full copy per process) or fsdp (weights, "
                                      "gradients and optimizer state sharded with FSDP2)", choices=DISTRIBUTED,
                               runtime=True)
    nproc: int = setting(0, "start this many processes on this machine through torchrun (0 or 1: one; or run "
                            "'torchrun --nproc_per_node N -m prefloop train ...' yourself)", runtime=True)
    dist_timeout: float = setting(1800.0, "seconds a process waits for the others in a collective before it "
                                          "fails", runtime=True)
    # data
    max_length: int = setting(1024, "prompt + completion tokens per sequence")
    max_prompt_length: int | None = setting(None, "skip pairs whose prompt is longer (default: only max_length "
                                                  "applies)")
    prompt_format: str = setting("auto", "auto (follow the data; Alpaca rows as one chat turn for a model with a "
                                         "chat template) | text | chat | alpaca", choices=PROMPT_FORMATS)
    group_by_length: bool = setting(True, "batch pairs of similar length (less padding); order stays random")
    shuffle: bool = setting(True, "shuffle the data each epoch")
    # bookkeeping
    eval_every: int = setting(0, "optimizer steps between evaluations (0: only at the end, when there is "
                                 "eval data)")
    save_every: int = setting(0, "optimizer steps between checkpoints (0: by time only)", runtime=True)
    save_minutes: float = setting(10.0, "minutes between checkpoints (0: by steps only); one is also written on "
                                        "Ctrl-C or SIGTERM", runtime=True)
    keep_checkpoints: int = setting(2, "checkpoints kept (the newest)", runtime=True)
    log_every: int = setting(1, "optimizer steps between metric lines", runtime=True)
    resume: bool = setting(False, "continue from the newest checkpoint in --output", runtime=True)
    resume_changed: bool = setting(False, "with --resume: continue although settings or data differ from the "
                                          "checkpoint's (the new ones apply from the resumed step)", runtime=True)
    overwrite: bool = setting(False, "train into an --output that holds a finished model, replacing it",
                              runtime=True)
    allow_pickle: bool = setting(False, "load pickle (.bin) model weights, which can run code: only for a model "
                                        "you trust (default: safetensors only)", runtime=True)
    stuck_steps: int = setting(20, "warn when the loss sits at its zero-margin value this many steps",
                               runtime=True)
    threads: int = setting(0, "torch CPU threads (0: torch's default)", runtime=True)
    live: bool = setting(True, "rich live view on a terminal (--no-live: plain lines)", runtime=True)
    report_to: list[str] = setting(help="also send the metrics, under TRL's names, to these trackers: tensorboard, "
                                        "wandb, mlflow (trainer.trackers)", factory=list, runtime=True)
    extra: dict[str, Any] = setting(help="free-form notes copied into the run record", factory=dict,
                                    runtime=True, flag=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings that cannot train, naming the setting and the reason."""
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"train.{name}: {why}")

        if self.beta <= 0:
            bad("beta", f"must be > 0, got {self.beta} (β = 0 removes the KL anchor and DPO diverges)")
        self.dtype = normalize_dtype(self.dtype)
        check_choices(self, "train.")
        from trainer.trackers import check  # a named tracker's library missing: one line, before any work

        check(self.report_to)
        if not 0.0 <= self.label_smoothing < 0.5:
            bad("label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
        for name in ("desirable_weight", "undesirable_weight"):
            if getattr(self, name) <= 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
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
        for name in ("warmup_steps", "max_steps", "eval_every", "save_every", "stuck_steps", "threads", "lora_r",
                     "nproc"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        from trainer.objectives import spec

        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 0:
            bad("max_tokens_per_batch", f"must be >= 0, got {self.max_tokens_per_batch}")
        if self.max_tokens_per_batch and spec(self.objective).whole_batch:
            bad("max_tokens_per_batch", f"objective {self.objective} reads the whole micro-batch at once (its "
                "reference point), so it cannot run in token-capped pieces: set it to 0 and lower batch_size")
        if not (self.device in ("auto", "cpu", "mps") or self.device.split(":")[0] == "cuda"):
            bad("device", f"{self.device!r} is not auto, cpu, cuda, cuda:N or mps")
        if self.max_grad_norm < 0:
            bad("max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        if self.epochs <= 0 and self.max_steps <= 0:
            bad("epochs", "set epochs > 0 or max_steps > 0")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length < self.max_length:
            bad("max_prompt_length", f"must be in [1, max_length={self.max_length}), got {self.max_prompt_length}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            bad("lora_alpha", f"must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if (self.lora_targets or self.lora_alpha is not None) and not self.lora_r:
            bad("lora_r", "is 0 (full fine-tune) but LoRA settings are given; set lora_r, e.g. 16")
        if self.qlora and not self.lora_r:
            bad("qlora", "trains LoRA adapters on a 4-bit base: set lora_r too, e.g. --lora-r 16")
        if self.save_minutes < 0:
            bad("save_minutes", f"must be >= 0, got {self.save_minutes}")
        if self.dist_timeout <= 0:
            bad("dist_timeout", f"must be > 0, got {self.dist_timeout}")


def piece_tokens(cfg: TrainConfig, device: Any) -> int:
    """The token cap in effect on ``device`` (a ``torch.device``): the setting when given, else
    ``CPU_PIECE_TOKENS`` on a CPU for an objective that can run in pieces, else none (0)."""
    if cfg.max_tokens_per_batch is not None:
        return cfg.max_tokens_per_batch
    from trainer.objectives import spec

    return CPU_PIECE_TOKENS if device.type == "cpu" and not spec(cfg.objective).whole_batch else 0


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None,
                      **values: Any) -> TrainConfig:
    """A ``TrainConfig`` from a TOML file's ``[train]`` section, command-line ``values`` (flags that were given)
    and ``key=value`` overrides, merged as every command merges them (``prefloop.config.load_section``)."""
    return load_section(TrainConfig, "train", path, overrides, values)
