"""The model and tokenizer a run trains, loaded with the failures a user can fix said in one line.

- A ``.gguf`` (or the embedded SmolLM2) is converted once into a safetensors folder; that takes 20 s to minutes,
  so it is announced. A file that is not GGUF is named as such; the cache is written atomically, so a failed
  conversion leaves nothing half-written.
- A Hub name that is not cached and cannot be fetched (a typo, or offline) is named with what to check.
- Weights load from safetensors only: pickle (``.bin``) files can run code when loaded, so they need
  ``--allow-pickle``.
- On a GPU the weights load straight onto this process's GPU (QLoRA's in 4-bit), not through host memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prefloop.models import ModelNotFound, pending_conversion, resolve
from trainer.config import TrainConfig
from trainer.data import TrainError
from trainer.lora import quantization
from prefloop.progress import note


def resolve_model(cfg: TrainConfig, console: Any) -> str:
    """``cfg.model`` as a folder or Hub name that ``from_pretrained`` reads, converting a GGUF first."""
    try:
        gguf = pending_conversion(cfg.model)
    except ModelNotFound as exc:
        raise TrainError(str(exc)) from None
    if gguf is None:
        try:
            return resolve(cfg.model)
        except ModelNotFound as exc:
            raise TrainError(str(exc)) from None
    size = gguf.stat().st_size / 1e6
    try:
        with note(console, f"converting {gguf.name} ({size:,.0f} MB) into a safetensors folder, once (SmolLM2: "
                           "about 20 s); later runs load that folder in seconds"):
            return resolve(cfg.model)
    except Exception as exc:  # the GGUF reader fails in many ways (ValueError, struct.error, ...) on a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(f"{gguf}: not a readable GGUF model ({first}); check the file (an incomplete "
                         "download?) or pass a model folder") from None


def _not_found(cfg: TrainConfig, where: str, exc: OSError) -> TrainError:
    path = Path(where)
    if path.is_dir():
        if not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
            return TrainError(f"{path}: holds pickle weights (.bin) only, which can run code when loaded; convert "
                              "them to safetensors, or pass --allow-pickle if you trust where they came from")
        return TrainError(f"{path}: cannot load the model ({str(exc).splitlines()[0]})")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    how = ("HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache load"
           if offline else "the Hub did not answer with it")
    return TrainError(f"train.model: {cfg.model!r} is not a model folder, a .gguf file or a Hub model this machine "
                      f"can get ({how}); check the name, or download it first")


def load_tokenizer(cfg: TrainConfig, where: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        raise _not_found(cfg, where, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def base_dtype(cfg: TrainConfig) -> torch.dtype:
    """What the starting weights are held in. A full fine-tune keeps fp32 weights (bf16 is autocast: updates
    smaller than bf16's step would be lost); LoRA's base is frozen, so with ``--dtype bf16`` it is held in bf16, half
    the memory (8 B: 16 GB instead of 32), while the adapter stays fp32."""
    return torch.bfloat16 if cfg.lora_r and cfg.dtype == "bf16" else torch.float32


def load_model(cfg: TrainConfig, where: str, device: torch.device) -> Any:
    """The starting model (``base_dtype``; with ``--qlora`` 4-bit), placed on ``device`` while it loads when that is
    a GPU."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": base_dtype(cfg), "use_safetensors": not cfg.allow_pickle or None}
    if device.type == "cuda":  # straight onto the GPU, shard by shard: an 8 B base never sits in host memory
        kwargs["device_map"] = {"": device}
    if cfg.qlora:
        kwargs["quantization_config"] = quantization(cfg)
    try:
        return AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise _not_found(cfg, where, exc) from None
