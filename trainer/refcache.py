"""Reference log-probs computed once and kept on disk, so no reference model sits in memory or runs each step.

One cache file per starting model (a digest of its weights and config) and compute dtype holds entries keyed by
each example's tokens (prompt and completions, so the data and the tokenisation are in the key). Only examples
the run will use and the file lacks are computed, then added. Files live under ``$PREFLOOP_CACHE/refcache``
(``~/.cache/prefloop``), so a second run on the same model and data, e.g. with another β or learning rate, starts
training at once; change the weights, the dtype, the data or the tokenisation and the affected entries are
computed afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from prefloop.files import atomic_path
from prefloop.models import cache_dir
from trainer.logps import autocast, packed_logps
from trainer.packing import epoch_batches, pack
from trainer.tokenize import Example

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
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # hashes the buffer in place, no copy
    return h.hexdigest()


def example_key(ex: Example) -> str:
    """An example's tokens (prompt and completions) as a short digest: same tokens, same reference log-probs."""
    blob = json.dumps([ex.prompt_ids, ex.completions], separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cache_path(root: Path, model_hash: str, dtype: str) -> Path:
    return root / f"{model_hash[:32]}-{dtype}-v{FORMAT_VERSION}.pt"


def default_cache_root() -> Path:
    return cache_dir() / "refcache"


def compute_ref_logps(model: Any, examples: list[Example], pad_id: int, *, batch_size: int, dtype: str,
                      progress: Callable[[int], None] | None = None) -> RefLogps:
    """Reference log-probs for ``examples`` with the packed path, under the training dtype, without grad."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast(dtype, device):
        for idx in epoch_batches(examples, batch_size, seed=0, epoch=0, shuffle=False):
            batch = pack([examples[i] for i in idx], pad_id).to(device)
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
                    progress: Callable[[int], None] | None = None) -> tuple[RefLogps, int, Path]:
    """``(ref, computed, path)``: reference log-probs for ``examples``, computing (and adding to the cache file)
    only those whose tokens are not cached yet for this model and dtype; ``computed`` counts them."""
    root = root or default_cache_root()
    path = cache_path(root, model_hash or model_digest(model), dtype)
    entries: dict[str, tuple[list[float], list[float]]] = {}
    if path.exists():
        entries = torch.load(path, weights_only=True)["entries"]
    keys = {ex.id: example_key(ex) for ex in examples}
    missing = [ex for ex in examples if keys[ex.id] not in entries]
    if missing:
        new = compute_ref_logps(model, missing, pad_id, batch_size=batch_size, dtype=dtype, progress=progress)
        for ex in missing:
            entries[keys[ex.id]] = (new.sums[ex.id], new.counts[ex.id])
        with atomic_path(path) as tmp:
            torch.save({"entries": entries}, tmp)
    ref = RefLogps({ex.id: list(entries[keys[ex.id]][0]) for ex in examples},
                   {ex.id: list(entries[keys[ex.id]][1]) for ex in examples})
    return ref, len(missing), path
