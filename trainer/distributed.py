"""Several training processes on torch's own engine: torchrun starts them, DDP or FSDP2 wraps the model.

``torchrun --nproc_per_node N -m prefloop train ...`` (or ``prefloop train --nproc N``, which runs that command)
starts N processes; torchrun's rendezvous joins several machines (``--nnodes``, ``--rdzv-endpoint``). Each process
reads RANK, WORLD_SIZE and LOCAL_RANK from the environment; one process without them is a plain run.

The rules that make N processes train exactly as one does with the same global batch:

- Every process builds the same global batch plan (``trainer.packing.epoch_batches``) and takes rows
  ``[rank::world]`` of each micro-batch (``Dist.share``). Losses are normalised by the whole micro-batch
  (``PackedBatch.total_rows``/``total_tokens``) and multiplied by the world size, so DDP's (and FSDP2's) gradient
  average reproduces the one-process gradient, also for an odd last batch.
- Every process runs the same number of forwards and collectives, or they wait on each other until the timeout: a
  process whose share of a micro-batch is empty runs a 0-weighted forward on one row, and every stop decision
  (non-finite values, Ctrl-C, a checkpoint due by time) is reduced across processes before anyone acts on it.
- The model is called only through one wrapper module (``trainer.logps.PackedLM``), which DDP or FSDP2 wraps:
  DDP syncs gradients only for work done inside its own ``forward``.
- FSDP2 (``fully_shard``) shards each decoder layer, then the root; the embedding, the final norm and a tied LM
  head stay in the root's group.

Backend: gloo on CPUs; on GPUs NCCL for tensors and gloo for CPU objects, each process on the GPU of its
LOCAL_RANK.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from trainer.config import TrainConfig
from trainer.data import TrainError

T = TypeVar("T")


@dataclass
class Dist:
    """This process's place among the training processes (a plain run: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "single"          # single | ddp | fsdp
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the log, checkpoints' small files and the final model."""
        return self.rank == 0

    @property
    def is_node_writer(self) -> bool:
        """LOCAL_RANK 0: the one process per machine that writes that machine's reference cache."""
        return self.local_rank == 0

    def share(self, rows: Sequence[int]) -> tuple[list[int], float]:
        """This process's rows of a micro-batch and their weight: 1, or 0 for an empty share, which then runs one
        row anyway so that every process does the same forwards and backwards."""
        mine = list(rows[self.rank::self.world])
        return (mine, 1.0) if mine else (list(rows[:1]), 0.0)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Each value summed over the processes (one all-reduce; every process must pass the same keys)."""
        if not self.enabled:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any: the way each stop decision is taken."""
        return bool(self.sum({"flag": float(flag)})["flag"]) if self.enabled else flag

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def node_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on LOCAL_RANK 0 first, then on the machine's other processes (a GGUF is converted once per
        machine, not by every process at the same time)."""
        result, error = None, None
        if self.is_node_writer:
            try:
                result = fn()
            except TrainError as exc:
                error = str(exc)
        self.check(error)
        return fn() if not self.is_node_writer else result  # type: ignore[return-value]

    def check(self, error: str | None) -> None:
        """Raise ``TrainError`` on every process when any process met ``error`` (the first one is told), so one
        process's failure stops all of them instead of leaving the others waiting."""
        errors = [e for e in self.gather(error) if e]
        if errors:
            raise TrainError(errors[0])


def start(cfg: TrainConfig, device: torch.device) -> Dist:
    """Join the processes torchrun started (a plain ``Dist`` when there is one process); ``device`` is the
    resolved ``--device``, which becomes this process's GPU (``cuda:LOCAL_RANK``) on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index not in (None, local_rank) and cfg.device != "auto":
            raise TrainError(f"train.device: {cfg.device} with {world} processes would put them all on one GPU; "
                             "use --device cuda (or auto): each process takes the GPU of its LOCAL_RANK")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "cuda:nccl,cpu:gloo"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise TrainError(f"train.device: {device.type} cannot run several processes; use cuda or cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=cfg.dist_timeout))
    return Dist(rank=rank, world=world, local_rank=local_rank, mode=cfg.distributed, device=device)


def stop() -> None:
    """Leave the process group (at the end of a command: a run inside a test keeps it for the next one)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def decoder_layers(lm: Any) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model (the classes it names in ``_no_split_modules``): FSDP2's
    units."""
    from trainer.logps import causal_lm

    names = set(getattr(causal_lm(lm), "_no_split_modules", None) or ())
    layers = [m for m in lm.modules() if type(m).__name__ in names]
    if not layers:
        raise TrainError(f"--distributed fsdp: cannot find the decoder layers of {type(causal_lm(lm)).__name__} "
                         "(it names none in _no_split_modules); use --distributed ddp")
    return layers


def wrap(module: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """``module`` (a ``PackedLM``) ready for this run: itself in one process, DDP, or FSDP2-sharded in place."""
    if not dist.enabled:
        return module
    if dist.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(module.lm):
            fully_shard(layer)
        fully_shard(module)
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # buffers (rotary frequencies) are equal everywhere; syncing them would add a collective to every forward
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
               else {"broadcast_buffers": False})  # torch < 2.13
    return DDP(module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None, **no_sync)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The ``PackedLM`` inside a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return getattr(module, "module", module)


@contextlib.contextmanager
def grad_sync(module: torch.nn.Module, dist: Dist, sync: bool) -> Iterator[None]:
    """Forward and backward of one micro-batch, syncing gradients across processes only when ``sync`` (the last
    micro-batch of an optimizer step); earlier ones accumulate locally."""
    if not dist.enabled or sync:
        if dist.mode == "fsdp" and dist.enabled:
            module.set_requires_gradient_sync(True)
        yield
    elif dist.mode == "fsdp":
        module.set_requires_gradient_sync(False)
        yield
    else:
        with module.no_sync():
            yield


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """Clip and return the total gradient norm as a float (under FSDP2 it comes back as a DTensor)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def lm_state_dict(module: torch.nn.Module, dist: Dist) -> dict[str, torch.Tensor]:
    """The language model's full weights, keyed as the model itself names them, on rank 0 (other processes get
    ``{}``). Under FSDP2 the shards are gathered to rank 0's CPU memory (a collective: every process calls it)."""
    inner = unwrap(module)
    if dist.mode != "fsdp" or not dist.enabled:
        return inner.lm.state_dict() if dist.is_main else {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in full.items()}


def launch(cfg: TrainConfig, command: str, *, quiet: bool = False) -> int:
    """Run ``command`` (``train`` or ``sft``) with these settings in ``cfg.nproc`` processes on this machine
    through torchrun; returns its exit code. The settings travel as ``--set`` values, so the processes read
    exactly what this one read."""
    import dataclasses
    import json

    default = TrainConfig()
    sets = [f"{f.name}={json.dumps(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)
            if f.name != "nproc" and getattr(cfg, f.name) != getattr(default, f.name)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}",
           "-m", "prefloop", command] + [a for s in sets for a in ("--set", s)] + (["--quiet"] if quiet else [])
    proc = subprocess.Popen(cmd)
    interrupted = False
    while True:
        try:
            code = proc.wait()
            if code and not interrupted:  # torchrun ends with its own traceback, which says nothing of what to do
                print(f"error: one of the {cfg.nproc} training processes failed (exit {code}; its own error is "
                      f"above torchrun's report); the checkpoints in {cfg.output_dir}/checkpoints are kept: fix the "
                      "cause and run the same command with --resume to continue from the newest", file=sys.stderr)
            return 130 if interrupted and code else code
        except KeyboardInterrupt:  # the terminal sent it to torchrun and the processes too: wait while they save
            interrupted = True
