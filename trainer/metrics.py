"""Metrics: averaged over micro-batches, written one JSON line per step, shown live on a terminal.

Names follow TRL (``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``,
``logps/chosen``, ``logps/rejected``, ``grad_norm``, ``learning_rate``) plus ``tokens/s``; every row also has
``step``, ``epoch`` and ``split`` (``train`` or ``eval``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from prefloop.jsonl import JsonlAppender, read_jsonl, write_jsonl


class Averager:
    """Weighted means of named values (weights: pairs in each micro-batch)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.weight: dict[str, float] = defaultdict(float)

    def add(self, values: dict[str, float], weight: float) -> None:
        for k, v in values.items():
            self.total[k] += v * weight
            self.weight[k] += weight

    def means(self) -> dict[str, float]:
        return {k: self.total[k] / self.weight[k] for k in self.total if self.weight[k] > 0}


class NoLog:
    """What the processes other than rank 0 log to: nothing (rank 0 writes the reduced metrics)."""

    def append(self, obj: Any) -> None:
        pass

    def __enter__(self) -> "NoLog":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_metrics(path: Path, *, keep_until_step: int | None, enabled: bool = True) -> JsonlAppender | NoLog:
    """Open ``metrics.jsonl`` for appending; on resume, rows after the checkpoint's step are dropped first so the
    log reads like one uninterrupted run. ``enabled`` False: a log that writes nothing."""
    if not enabled:
        return NoLog()
    if keep_until_step is not None and path.exists():
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= keep_until_step]
        write_jsonl(path, rows)
    elif keep_until_step is None and path.exists():
        path.unlink()
    return JsonlAppender(path)


class LiveView:
    """A rich progress bar with the latest loss, accuracy, margin and speed on a terminal; otherwise a plain line
    every tenth of the run."""

    def __init__(self, console: Any, total: int, enabled: bool, start: int = 0) -> None:
        self.console = console
        self.progress = None
        self.total = total
        self.every = max(1, total // 10)  # plain log lines when there is no live view
        if enabled and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> "LiveView":
        if self.progress:
            self.progress.start()
        return self

    def update(self, step: int, row: dict[str, Any]) -> None:
        parts = [f"loss {row['loss']:.4f}"]
        if "rewards/accuracies" in row:
            parts.append(f"acc {row['rewards/accuracies']:.2f} margin {row['rewards/margins']:+.3f}")
        parts.append(f"{row.get('tokens/s', 0):,.0f} tok/s")
        if "gpu_memory_gib" in row:
            parts.append(f"{row['gpu_memory_gib']:.1f} GiB peak")
        if self.progress:
            self.progress.update(self.task, completed=step, info="  ".join(parts))
        elif self.console is not None and self.total and (step % self.every == 0 or step == self.total):
            self.console.print(f"step {step}/{self.total}  " + "  ".join(parts), highlight=False)

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()


# ------------------------------------------------------------------------------- what GPU users size a run by

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by a fragment of torch's device name; a
# GPU not listed gets no MFU figure rather than a guessed one (bench/gpu_check.sh measures the peak instead).
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def train_flops_per_token(model: Any, mean_seq_len: float, *, frozen_base: bool) -> float:
    """Training FLOPs per token, counted the usual way (PaLM's MFU appendix): 6 × the parameters of the linear
    layers (forward 2, backward 4: gradients of inputs and of weights), or 4 × with a frozen base under LoRA (no
    weight gradients; the adapters' own FLOPs are negligible), plus attention's two matmuls, 6 × layers × width ×
    the mean sequence length (causal: half the keys on average, forward and backward). Embedding lookups are not
    FLOPs; the LM head is a linear layer and counts. Recomputation under gradient checkpointing does not count.
    4-bit (QLoRA) layers count with their unpacked shape."""
    import torch

    linear = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "lora_" not in name:
            linear += m.in_features * m.out_features
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    heads, head_dim = getattr(cfg, "num_attention_heads", 0) or 0, getattr(cfg, "head_dim", None)
    width = heads * head_dim if heads and head_dim else (getattr(cfg, "hidden_size", 0) or 0)
    return (4 if frozen_base else 6) * linear + 6 * layers * width * mean_seq_len


def peak_bf16_flops(device: Any) -> float | None:
    """The data-sheet bf16 peak of a CUDA ``device`` in FLOP/s, or None (a CPU, or a GPU not in the table)."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # GH200 before H200 ...
        if key in name:
            return BF16_PEAK_TFLOPS[key] * 1e12
    return None


def peak_memory_mib(device: Any) -> dict[str, float]:
    """Peak GPU memory held by tensors on a CUDA ``device`` (what decides whether a run fits), and this process's
    peak resident host memory where the OS reports it, in MiB."""
    import torch

    out: dict[str, float] = {}
    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_mib"] = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        pass
    return out
