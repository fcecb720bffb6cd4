"""Checkpoints: everything needed to continue a run as if it had never stopped, and nothing that runs code.

``output_dir/checkpoints/step-000120/`` holds:

- ``run.json``: the step, the data position and the loop's counters, and the run's fingerprint (the settings and
  the data that decide the trained model), so ``--resume`` refuses a checkpoint of another run and says what
  differs (``--resume-changed`` continues on purpose with the new settings);
- ``state.pt``: scheduler and per-process RNG states (and the optimizer in the plain format), loaded with
  ``weights_only=True``: tensors and plain values only, so a planted file cannot run code;
- the weights that train (all of them, or the LoRA adapter's) and the optimizer state, in one of two formats:
  *plain* (one process or DDP: ``model.safetensors``, written by rank 0) or *sharded* (FSDP2: ``dcp/``, written by
  every process through ``torch.distributed.checkpoint``, which reshards on load, so a 2-process run resumes in 1).
  DCP's own index is a pickle; it is read with an unpickler that accepts only DCP's metadata classes.

A checkpoint is written to a temporary folder and renamed into place, so a crash or a full disk mid-save never
leaves a half checkpoint that ``--resume`` would pick, and older checkpoints are pruned only after the new one is
complete (the newest ``keep`` stay).
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import StorageMeta

from prefloop.config import fingerprinted
from prefloop.files import atomic_path
from prefloop.fingerprint import file_hash, model_identity
from trainer.config import TrainConfig
from trainer.data import TrainError
from trainer.distributed import Dist, unwrap

PREFIX = "step-"
INFO = "run.json"
STATE = "state.pt"
WEIGHTS = "model.safetensors"
SHARDED = "dcp"


def checkpoints_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_folders(output_dir: Path) -> list[Path]:
    """Every ``step-*`` folder, oldest first (also ones this version cannot resume)."""
    root = checkpoints_dir(output_dir)
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return [p for p in step_folders(output_dir) if (p / INFO).exists() and (p / STATE).exists()]


# ------------------------------------------------------------------------------------------ fingerprint

def run_fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """What decides the trained model: every setting not marked ``runtime`` and the content of the data files
    (the model by its files' names, sizes and times, or its name)."""
    def content(path: str | None) -> str | None:
        if not path:
            return None
        p = Path(path).expanduser()
        return f"sha256:{file_hash(p)}" if p.exists() else f"name:{path}"

    settings = json.loads(json.dumps(fingerprinted(cfg), default=str))
    return {"settings": settings, "inputs": {"data": content(cfg.data), "eval_data": content(cfg.eval_data),
                                             "model": model_identity(cfg.model)}}


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase each (``lr 1e-06 (now 3e-05)``)."""
    out = []
    for group, label in (("settings", "{k} {a} (now {b})"), ("inputs", "{k} (other content: {a} -> {b})")):
        a_all, b_all = saved.get(group, {}), now.get(group, {})
        for k in sorted(set(a_all) | set(b_all)):
            a, b = a_all.get(k), b_all.get(k)
            if a != b:
                out.append(label.format(k=k, a=_short(a), b=_short(b)))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:18] + "…" + text[-8:]


def read_info(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path / INFO}: unreadable ({exc}); delete {path} to resume from an older checkpoint")\
            from None


SHAPE = ("lora_r", "lora_targets")   # settings that decide which weights are trained (the checkpoint's shape)


def check_resumable(path: Path, cfg: TrainConfig, dist: Dist) -> list[str]:
    """Refuse (``TrainError``) a checkpoint whose fingerprint differs from this run's unless
    ``cfg.resume_changed``; returns the differences accepted. A sharded checkpoint needs a run that can read it."""
    info = read_info(path)
    diffs = differences(info.get("fingerprint", {}), run_fingerprint(cfg))
    if diffs and not cfg.resume_changed:
        raise TrainError(f"--resume: {path} belongs to a run with other settings or data: {'; '.join(diffs)}. "
                         "Run with the checkpoint's settings, add --resume-changed to continue with the new ones "
                         "from its step, or choose another --output to start afresh")
    saved = info.get("fingerprint", {}).get("settings", {})
    now = run_fingerprint(cfg).get("settings", {})
    shape = [k for k in SHAPE if k in saved and saved.get(k) != now.get(k)]
    if diffs and shape:  # not a change --resume-changed can carry: the trained weights have another shape
        kind = lambda r: f"LoRA rank {r}" if r else "a full fine-tune"  # noqa: E731
        raise TrainError(f"--resume: {path} holds the weights of {kind(saved.get('lora_r'))}"
                         f"{' on ' + _short(saved.get('lora_targets')) if saved.get('lora_targets') else ''}; "
                         f"this run is {kind(cfg.lora_r)}: {', '.join(shape)} cannot change within a run. Resume "
                         "with the checkpoint's " + ", ".join(shape) + ", or choose another --output to start afresh")
    if info.get("format") == "plain" and dist.mode == "fsdp" and dist.enabled:
        raise TrainError(f"--resume: {path} was written by a one-process or DDP run; resume it with "
                         "--distributed ddp (or in one process)")
    return diffs


# ------------------------------------------------------------------------------------------- save / load

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


def _trainable_keys(module: torch.nn.Module) -> set[str]:
    return {name for name, p in unwrap(module).named_parameters() if p.requires_grad}


def save_checkpoint(output_dir: Path, step: int, module: torch.nn.Module, optimizer: Any, scheduler: Any,
                    loop_state: dict[str, Any], keep: int, *, dist: Dist, fingerprint: dict[str, Any],
                    trainable_only: bool) -> Path:
    """Write checkpoint ``step`` atomically (every process calls this) and prune old ones; returns its folder.
    Raises ``TrainError`` on every process when writing failed on any; what was there before is untouched."""
    target = checkpoints_dir(output_dir) / f"{PREFIX}{step:06d}"
    sharded = dist.enabled and dist.mode == "fsdp"
    rng = dist.gather(rng_state())
    error = None
    with atomic_path(target, folder=True) if dist.is_main else contextlib.nullcontext() as mine:
        tmp = Path(dist.broadcast(str(mine) if mine else None))
        try:
            if sharded:
                _save_sharded(tmp / SHARDED, module, optimizer, trainable_only)
            if dist.is_main:
                state: dict[str, Any] = {"scheduler": scheduler.state_dict(), "rng": rng}
                if not sharded:
                    _save_plain_weights(tmp / WEIGHTS, module, trainable_only)
                    state["optimizer"] = optimizer.state_dict()
                torch.save(state, tmp / STATE)
                info = {"step": step, "loop": loop_state, "format": "sharded" if sharded else "plain",
                        "world": dist.world, "trainable_only": trainable_only, "fingerprint": fingerprint}
                (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        except (OSError, RuntimeError) as exc:  # a full disk: torch.save says "[enforce fail at inline_container…]"
            said = (exc.strerror if isinstance(exc, OSError) and exc.strerror else
                    str(exc).strip().splitlines()[0])
            if "inline_container" in said or "write failed" in said:  # torch's words for a refused write
                said = "the file system refused the write (a full disk or a file-size limit)"
            with contextlib.suppress(OSError):
                said += f"; {shutil.disk_usage(output_dir).free / 1e9:.1f} GB free there"
            error = (f"could not write checkpoint {target}: {said}; free space (or choose another --output) and "
                     "run the same command with --resume: it continues from the last checkpoint")
        dist.check(error)  # raises inside the block, so rank 0's temporary folder is removed
    if dist.is_main:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _save_plain_weights(path: Path, module: torch.nn.Module, trainable_only: bool) -> None:
    from safetensors.torch import save_file

    lm = unwrap(module).lm
    keep = {k.removeprefix("lm.") for k in _trainable_keys(module)} if trainable_only else None
    weights = {k: v.detach().cpu().contiguous() for k, v in lm.state_dict().items() if keep is None or k in keep}
    save_file(_untie(weights), str(path))


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): store each shared one as its own copy."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in weights.items():
        ptr = v.data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.setdefault(ptr, k)
    return out


def _state_dicts(module: torch.nn.Module, optimizer: Any, trainable_only: bool) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(unwrap(module), optimizer)
    if trainable_only:
        keep = _trainable_keys(module)
        model_sd = {k: v for k, v in model_sd.items() if k in keep}
    return model_sd, optim_sd


def _save_sharded(folder: Path, module: torch.nn.Module, optimizer: Any, trainable_only: bool) -> None:
    import torch.distributed.checkpoint as dcp

    model_sd, optim_sd = _state_dicts(module, optimizer, trainable_only)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder))


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer: Any, scheduler: Any, *, dist: Dist,
                    trainable_only: bool) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG from ``path``; return the loop's saved state
    (``step`` and counters). A bad or planted file is a ``TrainError`` naming it."""
    info = read_info(path)
    try:
        state = torch.load(path / STATE, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TrainError(f"{path / STATE}: holds more than tensors and plain values ({str(exc).splitlines()[0]}); "
                         f"refused, since loading it could run code. Delete {path} (or the whole checkpoints "
                         "folder) unless you know where it came from") from None
    except (OSError, RuntimeError) as exc:
        raise TrainError(f"{path / STATE}: unreadable ({exc}); delete {path} to resume from an older checkpoint")\
            from None
    if info.get("format") == "sharded":
        _load_sharded(path / SHARDED, module, optimizer, trainable_only)
    else:
        _load_plain_weights(path / WEIGHTS, module, trainable_only)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
    return {"step": info["step"], **info["loop"]}


def _load_plain_weights(path: Path, module: torch.nn.Module, trainable_only: bool) -> None:
    from safetensors.torch import load_file

    lm = unwrap(module).lm
    weights = load_file(str(path), device=str(next(lm.parameters()).device))
    result = lm.load_state_dict(weights, strict=not trainable_only)
    wanted = {k.removeprefix("lm.") for k in _trainable_keys(module)}
    missing = wanted - set(weights)
    if result.unexpected_keys or (trainable_only and missing):
        raise TrainError(f"{path}: its weights do not fit this model (missing {sorted(missing)[:3]}, unexpected "
                         f"{result.unexpected_keys[:3]}); it belongs to another model or LoRA setting")


def _load_sharded(folder: Path, module: torch.nn.Module, optimizer: Any, trainable_only: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    reader = SafeReader(str(folder))
    reader.read_metadata()  # a refused index stops here, before DCP wraps the error in its own
    model_sd, optim_sd = _state_dicts(module, optimizer, trainable_only)
    dcp.load({"model": model_sd, "optim": optim_sd}, storage_reader=reader)
    set_state_dict(unwrap(module), optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(strict=not trainable_only))


# DCP's index (`.metadata`) is a pickle; these are the only things it needs to rebuild
_DCP_GLOBALS = {
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"), ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
_DCP_MODULES = ("torch.distributed.checkpoint.metadata",)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DCP_GLOBALS or module in _DCP_MODULES or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


class SafeReader(FileSystemReader):
    """DCP's file reader with an index unpickler that refuses anything but DCP's metadata classes."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as fh:
            data = fh.read()
        try:
            metadata = _MetadataUnpickler(io.BytesIO(data)).load()
        except pickle.UnpicklingError as exc:
            raise TrainError(f"{path}: {exc}; refused, since loading it could run code. Delete "
                             f"{Path(str(path)).parent.parent} unless you know where it came from") from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
