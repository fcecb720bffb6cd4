"""Checkpoints: everything needed to continue a run as if it had never stopped.

``output_dir/checkpoints/step-000120/`` holds ``model.safetensors`` (the policy weights) and ``state.pt``
(optimizer, scheduler, RNG states, the step, the data position and the loop's counters). A checkpoint is written
to a temporary folder and renamed into place, so a crash mid-save never leaves a half checkpoint that ``--resume``
would pick; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from prefloop.files import atomic_path

PREFIX = "step-"


def checkpoints_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                    loop_state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` atomically and prune old ones; returns its folder."""
    from safetensors.torch import save_file

    target = checkpoints_dir(output_dir) / f"{PREFIX}{step:06d}"
    with atomic_path(target, folder=True) as tmp:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(_untie(weights), str(tmp / "model.safetensors"))
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_state(), "loop": loop_state}, tmp / "state.pt")
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): store each shared one as its own copy."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in weights.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.setdefault(ptr, k)
    return out


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from ``path``; return the loop's saved state."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"), device=str(next(model.parameters()).device))
    model.load_state_dict(weights, strict=True)
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return {"step": state["step"], **state["loop"]}
