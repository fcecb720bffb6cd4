"""LoRA and QLoRA through the ``peft`` library (``pip install 'prefloop[lora]'``; QLoRA: ``'prefloop[qlora]'``).

LoRA trains two small matrices per adapted linear layer (``W + (alpha / r) · B A``) and leaves the base frozen: a
DPO run on Llama-3.1-8B needs about 20–22 GB instead of about 130 GB (README, "Workstation scale").

Why the reference stays cheap: ``B`` starts at zero, so at step 0 the adapter model *is* the base. The reference
log-probs (cached or not) are the model with its adapter switched off, which equals the base exactly; the cache key
is the digest of the base taken before the adapter is added, so a LoRA run and a full fine-tune of the same model
share one cache. QLoRA's frozen base is the 4-bit one, so its reference is the 4-bit base with the adapter off and
the cache key names the quantization.

Outputs: checkpoints hold the adapter weights and optimizer state only. The final folder is the merged model
(``merge_and_unload``: plain transformers loads it) with the adapter beside it in ``adapter/`` (PEFT's format:
``PeftModel.from_pretrained(base, "final/adapter")``). With ``--dtype bf16`` the frozen base is held, and the merged
model written, in bf16. A QLoRA adapter is merged into the bf16 base, not into the 4-bit weights it was trained
against, so the merged model's outputs shift slightly.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from trainer.config import TrainConfig
from trainer.data import TrainError
from trainer.logps import causal_lm

MIN_PEFT = (0, 18)
ADAPTER_DIR = "adapter"


def check_available(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse LoRA without peft, and QLoRA without CUDA or bitsandbytes, before any model is loaded."""
    if not cfg.lora_r:
        return
    try:
        import peft
    except ImportError:
        raise TrainError("train.lora_r: LoRA needs the peft library: pip install 'prefloop[lora]'") from None
    version = tuple(int(p) for p in peft.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_PEFT:
        raise TrainError(f"train.lora_r: peft {peft.__version__} is too old (transformers 5 needs >= 0.18): "
                         "pip install -U 'prefloop[lora]'")
    if not cfg.qlora:
        return
    if device.type != "cuda":
        why = "this machine has no CUDA GPU" if not torch.cuda.is_available() else f"--device is {device}"
        raise TrainError(f"train.qlora: the 4-bit base (bitsandbytes NF4) runs on CUDA GPUs only and {why}; "
                         "drop --qlora to train the same adapter on the full-precision base")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainError("train.qlora: QLoRA needs bitsandbytes: pip install 'prefloop[qlora]'") from None


def quantization(cfg: TrainConfig) -> Any:
    """The transformers ``BitsAndBytesConfig`` for ``--qlora`` (NF4, double quantization), else None. Under FSDP2
    the 4-bit weights are stored as bf16 so they can be sharded like the rest."""
    if not cfg.qlora:
        return None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if cfg.dtype == "bf16" else torch.float32
    storage = torch.bfloat16 if cfg.distributed == "fsdp" else torch.uint8
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=storage)


def quantization_key(cfg: TrainConfig) -> str:
    """What the reference cache key adds for a quantized base ("" for none): other quantization, other
    log-probs."""
    q = quantization(cfg)
    if q is None:
        return ""
    return f"nf4-dq-{q.bnb_4bit_compute_dtype}".replace("torch.", "")


def linear_names(model: Any) -> list[str]:
    """Names (last part) of the decoder's linear layers: LoRA's default targets. The LM head is left out (TRL
    and PEFT refuse it too: adapting a tied head would change the embedding)."""
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in lm.named_modules()
                   if isinstance(m, torch.nn.Linear) and m is not head})


def add_adapter(model: Any, cfg: TrainConfig) -> Any:
    """``model`` with LoRA adapters on ``cfg.lora_targets`` (default: every decoder linear layer); only the adapter
    weights train. The layers are injected in place, so ``model`` is changed too."""
    from peft import LoraConfig, get_peft_model

    available = linear_names(model)
    targets = list(cfg.lora_targets) or available
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise TrainError(f"train.lora_targets: {', '.join(unknown)} is not a linear layer of this model; its "
                         f"linear layers are {', '.join(available)}")
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * cfg.lora_r
    config = LoraConfig(r=cfg.lora_r, lora_alpha=alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    with _quiet_peft():
        return get_peft_model(model, config)


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 asks transformers 5 a deprecated question each time it wraps a model: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def is_adapted(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapter_off(model: Any) -> Iterator[None]:
    """The adapted model computes as its frozen base inside this block (the DPO reference)."""
    with model.disable_adapter():
        yield


def trainable_names(module: torch.nn.Module) -> set[str]:
    """State-dict names of the weights that train: all of them in a full fine-tune, the adapter's with LoRA."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def save_final(lm_state: dict[str, torch.Tensor], lm: Any, cfg: TrainConfig, folder: Path, tokenizer: Any, *,
               base: str) -> None:
    """Write ``folder/adapter`` (PEFT format) from the trained weights ``lm_state``, then the merged model into
    ``folder`` itself: the base (folder or Hub name ``base``) is loaded afresh, unquantized, the adapter is put on
    it and merged, as a user would do it with PEFT, so both outputs are checked to load while they are written."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = folder / ADAPTER_DIR
    lm.save_pretrained(adapter, state_dict=lm_state, safe_serialization=True)
    dtype = torch.bfloat16 if cfg.dtype == "bf16" else torch.float32  # as the base computed in training
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=not cfg.allow_pickle or None)
    with _quiet_peft():
        merged = PeftModel.from_pretrained(plain, str(adapter)).merge_and_unload()
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
