"""The training loop shared by DPO and SFT, as plain code in one place.

Order of work: claim the output folder (one run at a time), read and tokenise the data (a set with nothing usable
fails here, before any model is loaded), load the model (digest it for the reference cache, then add LoRA and
wrap it for several processes), let the objective prepare (DPO: reference log-probs), then step: pack
micro-batches, forward under the chosen dtype, backward, clip, AdamW step, schedule step, log, evaluate,
checkpoint. The objective supplies only the data it reads and the loss of one packed batch.

With several processes (``trainer.distributed``) every process runs this same code on its share of each
micro-batch; decisions to stop or save are taken together at the end of a step, and only rank 0 writes the log,
the live view and the final model.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from prefloop.config import to_dict
from prefloop.files import Busy, Lock, atomic_path, atomic_write_json
from prefloop.stage import StageResult
from trainer import attention, distributed, load, lora
from trainer.checkpoint import (check_resumable, list_checkpoints, load_checkpoint, run_fingerprint,
                                save_checkpoint, step_folders)
from trainer.config import TrainConfig, piece_tokens
from trainer.data import DESCRIPTIONS, LOADERS, TrainError, TrainItem, load_data, split_items
from trainer.distributed import Dist
from trainer.interrupt import StopFlag
from trainer.logps import PackedLM, autocast, cpu_has_fast_bf16, resolve_device
from trainer.objectives import Spec, spec
from trainer.metrics import (Averager, LiveView, open_metrics, peak_bf16_flops, peak_memory_mib,
                             train_flops_per_token)
from trainer.trackers import open_trackers
from trainer.optim import make_optimizer, make_scheduler, retarget
from trainer.packing import PackedBatch, epoch_batches, pack, share_pieces
from prefloop.progress import Progress
from trainer.refcache import PassStopped
from trainer.tokenize import Example, TokenizeReport, tokenize_records


@dataclass
class Policy:
    """The model being trained, as an objective uses it. ``policy(batch)`` gives per-sequence log-prob sums and
    counts through the DDP/FSDP wrapper, so gradients sync across processes; ``lm`` is the language model inside
    (a PEFT model with LoRA). Inside ``with policy.base():`` the calls compute the frozen starting model: LoRA's
    adapter switched off (equal to the base, since B = 0 at the start); a full fine-tune is its base only until
    its first step."""

    module: torch.nn.Module
    lm: Any
    dist: Dist

    def __call__(self, batch: PackedBatch, no_grad_from: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``no_grad_from``: completions from this index on are scored without gradient (``logps.split_logps``)."""
        return self.module(batch, no_grad_from)

    @property
    def adapted(self) -> bool:
        return lora.is_adapted(self.lm)

    def base(self) -> Any:
        return lora.adapter_off(self.lm) if self.adapted else contextlib.nullcontext()


class Objective:
    """What an objective gives the loop: its data, a look at the starting model, an optional preparation (DPO:
    reference log-probs), and the loss of one packed batch. The defaults are what an objective without these
    needs (SFT).

    ``loss`` gets one process's share of a micro-batch and returns that share's part of the whole micro-batch's
    loss and metrics (normalised by ``batch.total_rows`` or ``batch.total_tokens``), so that they add up over the
    processes to the one-process values."""

    name = "objective"  # a key of trainer.objectives.OBJECTIVES: its declaration (data, reference, settings)
    # completions of an item counted in tokens/s, as TRL counts them (None: all; KTO: the labelled answer only)
    counted: int | None = None

    @property
    def spec(self) -> Spec:
        return spec(self.name)

    def load(self, cfg: TrainConfig) -> tuple[list[TrainItem], list[TrainItem] | None, list[str]]:
        """The declared kind of data (``spec.data``) from ``cfg.data`` and ``cfg.eval_data``."""
        return load_data(cfg, LOADERS[self.spec.data], DESCRIPTIONS[self.spec.data])

    def start(self, model: Any, dist: Dist) -> None:
        """The loaded model, before LoRA or sharding change it (DPO: the digest that keys the reference cache, or
        a frozen copy)."""

    def prepare(self, policy: Policy, tokenizer: Any, train: list[Example], held_out: list[Example], *,
                console: Any, should_stop: Callable[[], bool]) -> list[str]:
        """Work before the first step; returns lines to print. ``should_stop`` (asked on every process together)
        says Ctrl-C was pressed: stop, keeping what is done, by raising ``PassStopped``."""
        return []

    def loss(self, policy: Policy, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def is_stuck(self, row: dict[str, float]) -> bool:
        """Whether a logged step shows no learning (counted to warn after ``stuck_steps`` in a row)."""
        return False

    def stuck_message(self, steps: int) -> str:
        return ""


DIVERGED = 100.0   # a loss this many times the first step's has diverged though finite (7 -> 22,000): stop as for NaN


@dataclass
class TrainResult(StageResult):
    """A training run: ``status`` complete; failed with the ``reason`` (non-finite values at step N); or
    interrupted (Ctrl-C or SIGTERM). An interrupted run does not raise: it finishes the step it is in, writes a
    checkpoint (``last_checkpoint``) and returns, and ``resume=True`` continues it. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once, leaving the last checkpoint written before. Interrupted during the reference
    pass, what was computed is cached and the same call starts with it."""

    output_dir: Path
    final_model_dir: Path | None
    metrics_path: Path
    steps: int = 0
    train_tokens: int = 0          # counted as TRL counts (prompt once per completion), this session only
    loop_seconds: float = 0.0      # time inside training steps (no eval, no checkpoint writes)
    loop_cpu_seconds: float = 0.0  # CPU time of this process in those steps (less noisy on a shared machine)
    prepare_seconds: float = 0.0   # reference log-probs etc.
    last_checkpoint: Path | None = None
    adapter_dir: Path | None = None  # LoRA: the adapter in PEFT's format (final_model_dir is the merged model)
    train_sequences: int = 0       # prompt+completion sequences in those tokens (for the mean length in FLOPs)
    flops_per_token: float = 0.0   # training FLOPs per counted token (metrics.train_flops_per_token)
    peak_flops: float | None = None  # the device's bf16 peak, FLOP/s, when known (metrics.peak_bf16_flops)
    memory: dict = field(default_factory=dict)  # peak GPU / host memory, MiB (metrics.peak_memory_mib)

    @property
    def mfu(self) -> float | None:
        """Model FLOPs utilisation: achieved training FLOP/s over the device's bf16 peak (None when unknown)."""
        if not self.peak_flops or not self.flops_per_token:
            return None
        return self.tokens_per_second * self.flops_per_token / self.peak_flops

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.loop_seconds if self.loop_seconds else 0.0


@contextlib.contextmanager
def claim(out: Path, dist: Dist) -> Iterator[None]:
    """The output folder for this run alone (a lock on its resolved path, held by rank 0), and writable: two
    runs on one folder would interleave their metrics and checkpoints."""
    error, lock = None, None
    if dist.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = Lock(out, folder=True).__enter__()
        except Busy as exc:
            error = str(exc)
        except OSError as exc:
            error = (f"{out}: cannot write there ({exc.strerror or exc}); choose another --output or make it "
                     "writable")
    dist.check(error)
    try:
        yield
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


# Row lengths padded up to a multiple of this per device type: on a GPU few distinct shapes mean kernels, cuBLAS
# plans and allocator blocks reused from step to step instead of a slow first few steps; a CPU gains nothing.
def pad_multiple(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 1


def _tokenize(tokenizer: Any, items: list[TrainItem], cfg: TrainConfig) -> tuple[list[Example], TokenizeReport]:
    try:
        return tokenize_records(tokenizer, items, prompt_format=cfg.prompt_format, max_length=cfg.max_length,
                                max_prompt_length=cfg.max_prompt_length)
    except ValueError as exc:
        raise TrainError(str(exc)) from None


def eval_metrics(objective: Objective, policy: Policy, examples: list[Example], cfg: TrainConfig, pad_id: int,
                 ticker: Progress | None = None) -> dict:
    """Mean metrics over the held-out examples, without gradients (each process scores its share)."""
    dist, device = policy.dist, policy.dist.device
    was_training = policy.module.training
    policy.module.eval()
    avg = Averager()
    with contextlib.ExitStack() as stack, torch.no_grad(), autocast(cfg.dtype, device):
        if ticker is not None:
            stack.enter_context(ticker).start(len(examples))
        for idx in epoch_batches(examples, cfg.batch_size, seed=0, epoch=0, shuffle=False):
            rows, weight = dist.share(idx)
            batch = pack([examples[i] for i in rows], pad_id, share_of=[examples[i] for i in idx],
                         multiple_of=pad_multiple(device)).to(device)
            _, metrics = objective.loss(policy, batch)
            avg.add({k: v * weight for k, v in metrics.items()}, len(idx))
            if ticker is not None:
                ticker.advance(len(idx))
    policy.module.train(was_training)
    return dist.sum(avg.means())


def run(cfg: TrainConfig, objective: Objective, console: Any = None, *, model: Any = None,
        tokenizer: Any = None) -> TrainResult:
    """Train ``model`` (loaded from ``cfg.model`` when not given; LoRA adapters are injected into it in place)
    with ``objective``; see the module docstring."""
    from rich.console import Console

    console = console or Console(stderr=True)
    out = Path(cfg.output_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    lora.check_available(cfg, device)  # peft, and CUDA for QLoRA, before any data or weights are read
    if attention.resolve(cfg.attention, device) == "flex" and device.type in ("cpu", "mps"):
        raise TrainError(f"train.attention: flex cannot train on {device.type} (PyTorch has no backward for flex "
                         "attention there); use attention = 'auto' or 'dense'")
    dist = distributed.start(cfg, device)
    device = dist.device
    if not dist.is_main:
        console = Console(quiet=True)
    with claim(out, dist), StopFlag(announce=dist.is_main) as stop:
        return _run(cfg, objective, console, out, dist, stop, model, tokenizer)


def _run(cfg: TrainConfig, objective: Objective, console: Any, out: Path, dist: Dist, stop: StopFlag,
         model: Any, tokenizer: Any) -> TrainResult:
    device = dist.device
    metrics_path = out / "metrics.jsonl"
    result = TrainResult(output_dir=out, final_model_dir=None, metrics_path=metrics_path)

    # 0. the folder: a fresh run never overwrites one that --resume can continue (its metrics log, its steps)
    if step_folders(out) and not cfg.resume:
        newest = step_folders(out)[-1]
        raise TrainError(f"{out} holds checkpoints of an earlier run (newest: {newest.name}); add --resume to "
                         f"continue it, or remove {newest.parent} (or choose another --output) to start afresh")
    if (out / "final").exists() and not step_folders(out) and not cfg.overwrite:
        raise TrainError(f"{out} holds a finished model ({out / 'final'}); choose another --output, or add "
                         "--overwrite to train again and replace it and its metrics.jsonl")
    if cfg.resume and step_folders(out) and not list_checkpoints(out):
        raise TrainError(f"--resume: the checkpoints in {out / 'checkpoints'} are incomplete or from an older "
                         "prefloop (no run.json); remove them to start afresh")

    # 1. data and tokens, before any model weights are read
    train_items, eval_items, notes = objective.load(cfg)
    for line in notes:
        console.print(line)
    if eval_items is None:
        train_items, eval_items = split_items(train_items, cfg.eval_split, cfg.seed)
    where = dist.node_first(lambda: load.resolve_model(cfg, console))
    tokenizer = tokenizer if tokenizer is not None else load.load_tokenizer(cfg, where)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    train_ex, report = _tokenize(tokenizer, train_items, cfg)
    for line in report.lines():
        console.print(line)
    if not train_ex:
        why = ", ".join(f"{n} {w}" for w, n in report.skipped.items()) or "the data set is empty"
        raise TrainError(f"{cfg.data}: no usable {objective.name} examples ({why}); nothing to train on "
                         f"(max_length={cfg.max_length})")
    eval_ex, _ = _tokenize(tokenizer, eval_items, cfg) if eval_items else ([], None)
    console.print(f"{objective.name}: {len(train_ex)} training and {len(eval_ex)} held-out examples"
                  + (f", {dist.world} processes ({dist.mode})" if dist.enabled else ""))

    # 2. model: digested for the reference cache before LoRA and sharding change it, then wrapped once
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if model is None:
        model = load.load_model(cfg, where, device)  # fp32, or a frozen LoRA base in bf16 (load.base_dtype)
    if cfg.dtype == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        console.print("[yellow]warning:[/] dtype bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX) is "
                      "many times slower than fp32 here; use --dtype fp32", highlight=False)
    if not cfg.qlora:  # a 4-bit model is placed while it loads
        model.to(device)
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    objective.start(model, dist)
    if cfg.lora_r:
        model = lora.add_adapter(model, cfg)
    model.train()
    policy = Policy(distributed.wrap(PackedLM(model, attention.resolve(cfg.attention, device)), dist), model, dist)

    # 3. plan: an epoch is its batches grouped into optimizer steps of `grad_accum` micro-batches
    def step_groups(epoch: int) -> list[list[list[int]]]:
        batches = epoch_batches(train_ex, cfg.batch_size, seed=cfg.seed, epoch=epoch, shuffle=cfg.shuffle,
                                group_by_length=cfg.group_by_length)
        groups = [batches[i:i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
        return [g for g in groups if len(g) == cfg.grad_accum] or groups[:1]

    groups = step_groups(0)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(groups)))
    used: set[int] = set()  # the examples the run's steps will draw (all of them unless it stops within an epoch)
    e, planned = 0, 0
    while planned < total and len(used) < len(train_ex):
        for g in (groups if e == 0 else step_groups(e))[:total - planned]:
            used.update(i for b in g for i in b)
            planned += 1
        e += 1

    # 4. prepare (DPO: reference log-probs); Ctrl-C here keeps what was computed
    t_prep = time.perf_counter()
    try:
        lines = objective.prepare(policy, tokenizer, [train_ex[i] for i in sorted(used)], eval_ex, console=console,
                                  should_stop=lambda: dist.any(stop.requested is not None))
    except PassStopped as exc:
        result.status, result.reason = "interrupted", (f"interrupted in the reference pass ({exc}); run the same "
                                                       "command again: it starts with what is cached")
        return _finish(cfg, objective, console, result, dist, 0, len(train_ex), len(eval_ex))
    for line in lines:
        console.print(line)
    result.prepare_seconds = time.perf_counter() - t_prep
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total)
    optimizer = make_optimizer(distributed.unwrap(policy.module), cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, warmup=warmup, total=total, schedule=cfg.schedule)
    params = [p for p in policy.module.parameters() if p.requires_grad]

    # 5. resume: only a checkpoint of this run (same settings and data), unless --resume-changed says otherwise
    step, epoch, pos, stuck, total_tokens = 0, 0, 0, 0, 0
    first_loss: float | None = None   # this session's first step: the yardstick of a finite divergence
    fingerprint = run_fingerprint(cfg)
    if cfg.resume and list_checkpoints(out):
        found = list_checkpoints(out)[-1]
        changed = check_resumable(found, cfg, dist)
        state = load_checkpoint(found, policy.module, optimizer, scheduler, dist=dist,
                                trainable_only=bool(cfg.lora_r))
        if changed:
            retarget(optimizer, scheduler, lr=cfg.lr, weight_decay=cfg.weight_decay)
            console.print(f"[yellow]--resume-changed:[/] continuing {found} with: {'; '.join(changed)}")
        step, epoch, pos, stuck = state["step"], state["epoch"], state["pos"], state["stuck"]
        total_tokens = state["tokens"]
        groups = step_groups(epoch)
        result.last_checkpoint = found
        console.print(f"resumed from {found} (step {step} of {total})")
    elif cfg.resume:
        console.print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from the beginning")
    log = open_metrics(metrics_path, keep_until_step=step if result.last_checkpoint else None, enabled=dist.is_main)
    log = open_trackers(log, cfg.report_to, out, resume_step=step if result.last_checkpoint else None,
                        enabled=dist.is_main, config=to_dict(cfg))
    last_eval, last_save = -1, time.monotonic()

    def do_eval() -> None:
        nonlocal last_eval
        ticker = Progress(console, None, "eval", unit="pairs", enabled=dist.is_main, live=view.progress)
        row = {"step": step, "epoch": round(epoch + pos / len(groups), 4), "split": "eval",
               **eval_metrics(objective, policy, eval_ex, cfg, pad_id, ticker)}
        log.append(row)
        last_eval = step
        view.note(f"eval @ step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                     if isinstance(v, float) and k != "epoch"))

    def save() -> None:
        nonlocal last_save
        result.last_checkpoint = save_checkpoint(
            out, step, policy.module, optimizer, scheduler,
            {"epoch": epoch, "pos": pos, "stuck": stuck, "tokens": total_tokens}, cfg.keep_checkpoints,
            dist=dist, fingerprint=fingerprint, trainable_only=bool(cfg.lora_r))
        last_save = time.monotonic()

    # 6. steps
    cap = piece_tokens(cfg, dist.device)
    view = LiveView(console, total, cfg.live and dist.is_main, start=step)
    with log, view:
        while step < total:
            if pos >= len(groups):
                epoch, pos = epoch + 1, 0
                groups = step_groups(epoch)
            t0, c0 = time.perf_counter(), time.process_time()
            avg = Averager()
            tokens = 0.0
            for j, idx in enumerate(groups[pos]):
                pieces = share_pieces(dist, train_ex, idx, cap)
                parts: dict[str, float] = {}  # each piece's loss and metrics are its part of the micro-batch's
                for n, (rows, weight) in enumerate(pieces):
                    mine = [train_ex[i] for i in rows]
                    batch = pack(mine, pad_id, share_of=[train_ex[i] for i in idx],
                                 multiple_of=pad_multiple(device)).to(device)
                    last = j == len(groups[pos]) - 1 and n == len(pieces) - 1
                    with distributed.grad_sync(policy.module, dist, sync=last):
                        with autocast(cfg.dtype, device):
                            loss, metrics = objective.loss(policy, batch)
                        # x world: DDP/FSDP average the processes' gradients, and each loss is a share of the whole
                        (loss * (weight * dist.world / len(groups[pos]))).backward()
                    for k, v in metrics.items():
                        parts[k] = parts.get(k, 0.0) + v * weight
                    tokens += sum(ex.counted_tokens(objective.counted) for ex in mine) * weight
                avg.add(parts, len(idx))
                result.train_sequences += len(idx) * (objective.counted or batch.n_completions)
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
            grad_norm = distributed.clip_grad_norm(params, max_norm)
            due = bool(cfg.save_minutes) and time.monotonic() - last_save >= 60 * cfg.save_minutes
            shared = dist.sum({**{f"m/{k}": v for k, v in avg.means().items()}, "tokens": tokens,
                               "stop": stop.requested is not None, "due": due, "bad_norm": not math.isfinite(grad_norm)})
            means = {k[2:]: v for k, v in shared.items() if k.startswith("m/")}
            bad = (f"loss is {means['loss']}" if not math.isfinite(means["loss"])
                   else f"gradient norm is {grad_norm}" if shared["bad_norm"] else None)
            first_loss = means["loss"] if first_loss is None else first_loss
            if bad is None and means["loss"] > max(DIVERGED * abs(first_loss), 10.0):
                bad = f"loss is {means['loss']:,.4g}, over {DIVERGED:g}x the first step's {first_loss:.4g} (diverged)"
            if bad is not None:
                optimizer.zero_grad(set_to_none=True)
                where = (f"the last good checkpoint is {result.last_checkpoint}" if result.last_checkpoint
                         else "no checkpoint was saved yet")
                result.status, result.reason = "failed", f"non-finite values at step {step + 1}: {bad}"
                view.note(f"[red]stopped: {bad} at step {step + 1}; the model was not saved over it, {where}. "
                          "Lower the learning rate, use fp32, or check the data.[/red]")
                break
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            result.loop_cpu_seconds += time.process_time() - c0
            tokens = int(round(shared["tokens"]))
            step, pos = step + 1, pos + 1
            result.steps += 1
            result.train_tokens += tokens
            result.loop_seconds += dt
            total_tokens += tokens
            row = {"step": step, "epoch": round(epoch + pos / len(groups), 4), "split": "train", **means,
                   "grad_norm": grad_norm, "learning_rate": lr, "tokens/s": tokens / dt, "tokens": total_tokens}
            if device.type == "cuda":
                row["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if step % cfg.log_every == 0 or step == total:
                log.append(row)
            view.update(step, row)
            stuck = stuck + 1 if objective.is_stuck(row) else 0
            if cfg.stuck_steps and stuck == cfg.stuck_steps:
                view.note(f"[yellow]warning: {objective.stuck_message(stuck)}[/yellow]")
            if eval_ex and cfg.eval_every and step % cfg.eval_every == 0:
                do_eval()
            if step < total and (shared["stop"] or shared["due"] or (cfg.save_every and step % cfg.save_every == 0)):
                save()
            if shared["stop"] and step < total:
                result.status = "interrupted"
                result.reason = (f"interrupted at step {step} of {total}; checkpoint {result.last_checkpoint}; run "
                                 "the same command with --resume to continue from there")
                break
        if result.complete and eval_ex and last_eval != step:
            do_eval()

    result.memory = peak_memory_mib(device)
    if result.train_sequences:
        result.flops_per_token = train_flops_per_token(
            policy.lm, result.train_tokens / result.train_sequences, frozen_base=bool(cfg.lora_r))
        result.peak_flops = peak_bf16_flops(device) if cfg.dtype == "bf16" else None

    # 7. final model: one folder plain transformers loads (LoRA: merged, with the adapter beside it)
    if result.complete:
        _save_final(cfg, policy, tokenizer, out / "final", where, dist)
        result.final_model_dir = out / "final"
        result.outputs["model"] = str(result.final_model_dir)
        if policy.adapted:
            result.adapter_dir = result.final_model_dir / lora.ADAPTER_DIR
            result.outputs["adapter"] = str(result.adapter_dir)
    return _finish(cfg, objective, console, result, dist, step, len(train_ex), len(eval_ex))


def _save_final(cfg: TrainConfig, policy: Policy, tokenizer: Any, final: Path, where: str, dist: Dist) -> None:
    """Write ``final`` atomically from rank 0 (under FSDP2 the weights are gathered there first)."""
    state = distributed.lm_state_dict(policy.module, dist)
    error = None
    if dist.is_main:
        try:
            with atomic_path(final, folder=True) as tmp:
                if policy.adapted:
                    lora.save_final(state, policy.lm, cfg, tmp, tokenizer, base=where)
                else:
                    policy.lm.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                    tokenizer.save_pretrained(tmp)
        except OSError as exc:
            error = (f"could not write the final model to {final} ({exc.strerror or exc}); free space (or fix the "
                     "folder) and run the same command with --resume: it continues from the newest checkpoint")
    dist.check(error)


def _finish(cfg: TrainConfig, objective: Objective, console: Any, result: TrainResult, dist: Dist, step: int,
            n_train: int, n_eval: int) -> TrainResult:
    """The run's summary file (rank 0) and its last line."""
    result.outputs["metrics"] = str(result.metrics_path)
    if dist.is_main:
        summary = {"objective": objective.name, "status": result.status, "reason": result.reason, "steps": step,
                   "final_model_dir": str(result.final_model_dir) if result.final_model_dir else None,
                   "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
                   "tokens_per_second": result.tokens_per_second, "loop_seconds": result.loop_seconds,
                   "prepare_seconds": result.prepare_seconds, "train_examples": n_train, "eval_examples": n_eval,
                   "flops_per_token": result.flops_per_token or None, "mfu": result.mfu, **result.memory,
                   "processes": dist.world, "config": {k: v for k, v in vars(cfg).items()}}
        atomic_write_json(result.output_dir / "train_summary.json", json.loads(json.dumps(summary, default=str)))
    usage = "".join(f", {label} {result.memory[key] / 1024:,.1f} GiB" for key, label in
                    (("peak_gpu_mib", "peak GPU memory"), ("peak_rss_mib", "peak RSS")) if key in result.memory)
    mfu = f", MFU {100 * result.mfu:.1f}%" if result.mfu is not None else ""
    console.print(f"{objective.name}: {result.reason or result.status} after {step} steps, "
                  f"{result.tokens_per_second:,.0f} tokens/s{mfu}{usage}; model: "
                  f"{result.final_model_dir or 'not saved'}")
    return result
