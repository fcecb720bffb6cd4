"""Reference log-probs computed once and kept on disk, so no reference model sits in memory or runs each step.

One cache file per starting model (a digest of its weights and config) and compute dtype holds entries keyed by
each example's tokens (prompt and completions, so the data and the tokenisation are in the key). Only examples
the run will use and the file lacks are computed, then added. Files live under ``$PREFLOOP_CACHE/refcache``
(``~/.cache/prefloop``), so a second run on the same model and data, e.g. with another β or learning rate, starts
training at once; change the weights, the dtype, the data or the tokenisation and the affected entries are
computed afresh.

With several processes each computes a share of the missing entries (rows ``[rank::world]`` of every batch, so all
run the same number of forwards), the shares are gathered, and one process per machine (LOCAL_RANK 0) writes that
machine's file. The pass runs under ``no_grad``, not ``inference_mode``: inference tensors would break FSDP2's
later forwards. The digest that keys the file is taken before LoRA or sharding change the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from prefloop.files import atomic_path
from prefloop.models import cache_dir
from trainer.logps import autocast
from trainer.packing import epoch_batches, pack, share_pieces
from trainer.tokenize import Example

if TYPE_CHECKING:
    from trainer.distributed import Dist
    from prefloop.progress import Progress

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


class PassStopped(Exception):
    """The reference pass stopped early (Ctrl-C); what it computed is in the cache file already."""


def model_digest(model: Any, extra: str = "") -> str:
    """A digest of every weight (bytes, shape, dtype), the config and ``extra`` (a quantization): two models hash
    equal only if identical."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode() + extra.encode())
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
                      device: torch.device, dist: "Dist | None" = None,
                      progress: Callable[[int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None, max_tokens: int = 0,
                      multiple_of: int = 1) -> tuple[RefLogps, bool]:
    """``(ref, complete)``: log-probs of ``examples`` from ``model(batch) -> (sums, counts)`` under the training
    dtype, without grad, this process's share of each batch gathered from all; ``complete`` is False when
    ``should_stop`` (asked after each batch, on every process) ended the pass early. ``max_tokens``: a forward
    packs at most that many tokens (``max_tokens_per_batch``; the batch runs in pieces, as a training step does);
    ``multiple_of``: row padding (``pack``)."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    complete = True
    with torch.no_grad(), autocast(dtype, device):
        for idx in epoch_batches(examples, batch_size, seed=0, epoch=0, shuffle=False):
            for rows, weight in share_pieces(dist, examples, idx, max_tokens):
                batch = pack([examples[i] for i in rows], pad_id, multiple_of=multiple_of).to(device)
                s, c = model(batch)
                k, n = batch.n_completions, batch.n_rows
                for r, rid in enumerate(batch.ids if weight else []):
                    sums[rid] = [float(s[j * n + r]) for j in range(k)]
                    counts[rid] = [float(c[j * n + r]) for j in range(k)]
            if progress:
                progress(len(idx))
            if should_stop and should_stop():
                complete = False
                break
    model.train(was_training)
    for part in (dist.gather((sums, counts)) if dist and dist.enabled else []):
        sums.update(part[0])
        counts.update(part[1])
    return RefLogps(sums, counts), complete


def read_cache(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """The cache file's entries. It is only a cache: a file that does not read as one (cut short, damaged,
    tampered with) is named, moved aside to ``<file>.bad-<time>`` and recomputed, never a reason to stop."""
    try:
        entries = torch.load(path, weights_only=True)["entries"]
        if not isinstance(entries, dict) or not all(
                isinstance(k, str) and isinstance(v, (tuple, list)) and len(v) == 2
                and all(isinstance(side, (list, tuple, torch.Tensor)) for side in v)
                for k, v in entries.items()):
            raise ValueError("its entries are not reference log-probs")
        return entries
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is recomputed, whatever broke it
        stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
        aside = path.with_name(f"{path.name}.bad-{stamp}")
        while aside.exists():   # never over an earlier one
            n += 1
            aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        with contextlib.suppress(FileNotFoundError):   # another process on this machine moved it already
            path.replace(aside)
        print(f"warning: the reference cache {path} is unreadable ({type(exc).__name__}: {str(exc)[:160]}); "
              f"moved aside to {aside.name}; recomputing it", file=sys.stderr)
        return {}


def load_or_compute(model: Any, examples: list[Example], pad_id: int, *, batch_size: int, dtype: str,
                    model_hash: str, device: torch.device, root: Path | None = None, dist: "Dist | None" = None,
                    progress: "Progress | None" = None, should_stop: Callable[[], bool] | None = None,
                    max_tokens: int = 0, multiple_of: int = 1) -> tuple[RefLogps, int, Path]:
    """``(ref, computed, path)``: reference log-probs for ``examples``, computing (and adding to the cache file)
    only those whose tokens are not cached yet for this model and dtype; ``computed`` counts them, and
    ``progress`` is started with their number. Raises ``PassStopped`` after caching what was computed when
    ``should_stop`` ended the pass."""
    root = root or default_cache_root()
    path = cache_path(root, model_hash, dtype)
    entries: dict[str, tuple[list[float], list[float]]] = {}
    if path.exists():
        entries = read_cache(path)
    keys = {ex.id: example_key(ex) for ex in examples}
    have = set(keys.values()) & set(entries)
    if dist and dist.enabled:  # machines may hold different caches: compute what any of them lacks
        for other in dist.gather(have):
            have &= other
    missing = [ex for ex in examples if keys[ex.id] not in have]
    if missing:
        if progress is not None:
            progress.start(len(missing))
        new, complete = compute_ref_logps(model, missing, pad_id, batch_size=batch_size, dtype=dtype, device=device,
                                          dist=dist, progress=progress.advance if progress else None,
                                          should_stop=should_stop, max_tokens=max_tokens, multiple_of=multiple_of)
        done = [ex for ex in missing if ex.id in new.sums]
        for ex in done:
            entries[keys[ex.id]] = (new.sums[ex.id], new.counts[ex.id])
        if dist is None or dist.is_node_writer:
            with atomic_path(path) as tmp:
                torch.save({"entries": entries}, tmp)
        if dist:
            dist.barrier()
        if not complete:
            raise PassStopped(f"{len(done)} of {len(missing)} reference log-probs computed and cached ({path})")
    ref = RefLogps({ex.id: list(entries[keys[ex.id]][0]) for ex in examples},
                   {ex.id: list(entries[keys[ex.id]][1]) for ex in examples})
    return ref, len(missing), path
