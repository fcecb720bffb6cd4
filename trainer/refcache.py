"""Reference log-probs computed once and kept on disk, so no reference model sits in memory or runs each step.

The cache key is a digest of the starting model's weights and config, the tokenised examples (ids, token ids,
order) and the compute dtype: change any of them and the log-probs are computed again. Files live under
``$PREFLOOP_CACHE/refcache`` (``~/.cache/prefloop``) so a second run on the same model and data, e.g. with another
β or learning rate, starts training at once.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from prefloop.models import cache_dir
from trainer.logps import packed_logps
from trainer.packing import epoch_batches, pack
from trainer.tokenize import Example, examples_hash

FORMAT_VERSION = 1


@dataclass
class RefLogps:
    """Per example (by id): sum of token log-probs and token count of each completion under the reference."""

    sums: dict[str, list[float]]
    counts: dict[str, list[float]]

    def lookup(self, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensors in ``packed_logps`` order (completion-major) for the examples ``ids``."""
        k = len(self.sums[ids[0]])
        sums = torch.tensor([self.sums[i][j] for j in range(k) for i in ids], dtype=torch.float32)
        counts = torch.tensor([self.counts[i][j] for j in range(k) for i in ids], dtype=torch.float32)
        return sums, counts


def model_digest(model: Any) -> str:
    """A digest of every weight (bytes, shape, dtype) and the config: two models hash equal only if identical."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(model_hash: str, examples: list[Example], dtype: str) -> str:
    blob = f"v{FORMAT_VERSION}|{model_hash}|{examples_hash(examples)}|{dtype}"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def default_cache_root() -> Path:
    return cache_dir() / "refcache"


def compute_ref_logps(model: Any, examples: list[Example], pad_id: int, *, batch_size: int, dtype: str,
                      progress: Callable[[int], None] | None = None) -> RefLogps:
    """Reference log-probs for ``examples`` with the packed path, under the training dtype, without grad."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    with torch.no_grad(), autocast:
        for idx in epoch_batches(examples, batch_size, seed=0, epoch=0, shuffle=False):
            batch = pack([examples[i] for i in idx], pad_id)
            s, c = packed_logps(model, batch)
            k, rows = batch.n_completions, batch.n_rows
            for r, rid in enumerate(batch.ids):
                sums[rid] = [float(s[j * rows + r]) for j in range(k)]
                counts[rid] = [float(c[j * rows + r]) for j in range(k)]
            if progress:
                progress(rows)
    model.train(was_training)
    return RefLogps(sums, counts)


def load_or_compute(model: Any, examples: list[Example], pad_id: int, *, batch_size: int, dtype: str,
                    root: Path | None = None, model_hash: str | None = None,
                    progress: Callable[[int], None] | None = None) -> tuple[RefLogps, bool, Path]:
    """``(ref, hit, path)``: read the cache when the key matches, else compute and write it atomically."""
    root = root or default_cache_root()
    key = cache_key(model_hash or model_digest(model), examples, dtype)
    path = root / f"{key}.pt"
    if path.exists():
        data = torch.load(path, weights_only=True)
        return RefLogps(data["sums"], data["counts"]), True, path
    ref = compute_ref_logps(model, examples, pad_id, batch_size=batch_size, dtype=dtype, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"sums": ref.sums, "counts": ref.counts}, tmp)
    os.replace(tmp, path)
    return ref, False, path
