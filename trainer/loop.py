"""The training loop shared by DPO and SFT, as plain code in one place.

Order of work: read and tokenise the data (a set with nothing usable fails here, before any model is loaded),
load the model, let the objective prepare (DPO: reference log-probs), then step: pack micro-batches, forward under
the chosen dtype, backward, clip, AdamW step, schedule step, log, evaluate, checkpoint. The objective supplies only
the data it reads and the loss of one packed batch.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefloop.stage import StageResult
from trainer.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import TrainError, TrainItem, split_items
from trainer.logps import autocast, cpu_has_fast_bf16, resolve_device
from trainer.metrics import Averager, LiveView, open_metrics
from trainer.optim import make_optimizer, make_scheduler
from trainer.packing import PackedBatch, epoch_batches, pack
from trainer.tokenize import Example, TokenizeReport, tokenize_records


class Objective:
    """What an objective gives the loop: its data, an optional preparation (DPO: reference log-probs), and the
    loss of one packed batch. The defaults are what an objective without these needs (SFT)."""

    name = "objective"

    def load(self, cfg: TrainConfig) -> tuple[list[TrainItem], list[TrainItem] | None, list[str]]:
        raise NotImplementedError

    def prepare(self, model: Any, tokenizer: Any, train: list[Example], held_out: list[Example]) -> list[str]:
        """Work before the first step; returns lines to print."""
        return []

    def loss(self, model: Any, batch: PackedBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def is_stuck(self, row: dict[str, float]) -> bool:
        """Whether a logged step shows no learning (counted to warn after ``stuck_steps`` in a row)."""
        return False

    def stuck_message(self, steps: int) -> str:
        return ""


@dataclass
class TrainResult(StageResult):
    """A training run: ``status`` complete, or failed with the ``reason`` (non-finite values at step N)."""

    output_dir: Path
    final_model_dir: Path | None
    metrics_path: Path
    steps: int = 0
    train_tokens: int = 0          # counted as TRL counts (prompt once per completion), this session only
    loop_seconds: float = 0.0      # time inside training steps (no eval, no checkpoint writes)
    loop_cpu_seconds: float = 0.0  # CPU time of this process in those steps (less noisy on a shared machine)
    prepare_seconds: float = 0.0   # reference log-probs etc.
    last_checkpoint: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.loop_seconds if self.loop_seconds else 0.0


def _tokenize(tokenizer: Any, items: list[TrainItem], cfg: TrainConfig) -> tuple[list[Example], TokenizeReport]:
    try:
        return tokenize_records(tokenizer, items, prompt_format=cfg.prompt_format, max_length=cfg.max_length,
                                max_prompt_length=cfg.max_prompt_length)
    except ValueError as exc:
        raise TrainError(str(exc)) from None


def eval_metrics(objective: Objective, model: Any, examples: list[Example], cfg: TrainConfig, pad_id: int) -> dict:
    """Mean metrics over the held-out examples, without gradients."""
    was_training = model.training
    model.eval()
    avg = Averager()
    device = next(model.parameters()).device
    with torch.no_grad(), autocast(cfg.dtype, device):
        for idx in epoch_batches(examples, cfg.batch_size, seed=0, epoch=0, shuffle=False):
            batch = pack([examples[i] for i in idx], pad_id).to(device)
            _, metrics = objective.loss(model, batch)
            avg.add(metrics, batch.n_rows)
    model.train(was_training)
    return avg.means()


def run(cfg: TrainConfig, objective: Objective, console: Any = None, *, model: Any = None,
        tokenizer: Any = None) -> TrainResult:
    """Train ``model`` (loaded from ``cfg.model`` when not given) with ``objective``; see the module docstring."""
    from rich.console import Console

    from prefloop.models import load_model, load_tokenizer

    console = console or Console(stderr=True)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # 1. data and tokens, before any model weights are read
    train_items, eval_items, notes = objective.load(cfg)
    for line in notes:
        console.print(line)
    if eval_items is None:
        train_items, eval_items = split_items(train_items, cfg.eval_split, cfg.seed)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)
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
    console.print(f"{objective.name}: {len(train_ex)} training and {len(eval_ex)} held-out examples")

    # 2. model
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if model is None:
        model, _ = load_model(cfg.model, dtype="fp32")  # weights stay fp32; bf16 is autocast
    device = resolve_device(cfg.device)
    if cfg.dtype == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        console.print("[yellow]warning:[/] dtype bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX) is "
                      "many times slower than fp32 here; use --dtype fp32", highlight=False)
    model.to(device)
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()

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

    t_prep = time.perf_counter()
    for line in objective.prepare(model, tokenizer, [train_ex[i] for i in sorted(used)], eval_ex):
        console.print(line)
    prepare_seconds = time.perf_counter() - t_prep
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, warmup=warmup, total=total, schedule=cfg.schedule)
    params = [p for p in model.parameters() if p.requires_grad]

    # 4. resume
    step, epoch, pos, stuck, total_tokens = 0, 0, 0, 0, 0
    resumed_from = None
    if cfg.resume:
        found = list_checkpoints(out)
        if found:
            resumed_from = found[-1]
            state = load_checkpoint(resumed_from, model, optimizer, scheduler)
            step, epoch, pos, stuck = state["step"], state["epoch"], state["pos"], state["stuck"]
            total_tokens = state["tokens"]
            groups = step_groups(epoch)
            console.print(f"resumed from {resumed_from} (step {step} of {total})")
        else:
            console.print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from the beginning")
    metrics_path = out / "metrics.jsonl"
    log = open_metrics(metrics_path, keep_until_step=step if resumed_from else None)

    result = TrainResult(output_dir=out, final_model_dir=None, metrics_path=metrics_path,
                         prepare_seconds=prepare_seconds,
                         last_checkpoint=resumed_from)
    last_eval = -1

    def do_eval() -> None:
        nonlocal last_eval
        row = {"step": step, "epoch": round(epoch + pos / len(groups), 4), "split": "eval",
               **eval_metrics(objective, model, eval_ex, cfg, pad_id)}
        log.append(row)
        last_eval = step
        view.note(f"eval @ step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                     if isinstance(v, float) and k != "epoch"))

    # 5. steps
    view = LiveView(console, total, cfg.live, start=step)
    with log, view:
        while step < total:
            if pos >= len(groups):
                epoch, pos = epoch + 1, 0
                groups = step_groups(epoch)
            t0, c0 = time.perf_counter(), time.process_time()
            avg = Averager()
            tokens = 0
            bad = None
            for idx in groups[pos]:
                batch = pack([train_ex[i] for i in idx], pad_id).to(device)
                with autocast(cfg.dtype, device):
                    loss, metrics = objective.loss(model, batch)
                value = loss.item()
                if not math.isfinite(value):
                    bad = f"loss is {value}"
                    break
                (loss / len(groups[pos])).backward()
                avg.add(metrics, batch.n_rows)
                tokens += batch.counted_tokens
            grad_norm = None
            if bad is None:
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                if not math.isfinite(grad_norm):
                    bad = f"gradient norm is {grad_norm}"
            if bad is not None:
                optimizer.zero_grad(set_to_none=True)
                where = (f"the last good checkpoint is {result.last_checkpoint}" if result.last_checkpoint
                         else "no checkpoint was saved yet (set save_every to keep one)")
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
            step, pos = step + 1, pos + 1
            result.steps += 1
            result.train_tokens += tokens
            result.loop_seconds += dt
            total_tokens += tokens
            row = {"step": step, "epoch": round(epoch + pos / len(groups), 4), "split": "train", **avg.means(),
                   "grad_norm": grad_norm, "learning_rate": lr, "tokens/s": tokens / dt, "tokens": total_tokens}
            if step % cfg.log_every == 0 or step == total:
                log.append(row)
            view.update(step, row)
            stuck = stuck + 1 if objective.is_stuck(row) else 0
            if cfg.stuck_steps and stuck == cfg.stuck_steps:
                view.note(f"[yellow]warning: {objective.stuck_message(stuck)}[/yellow]")
            if eval_ex and cfg.eval_every and step % cfg.eval_every == 0:
                do_eval()
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                result.last_checkpoint = save_checkpoint(
                    out, step, model, optimizer, scheduler,
                    {"epoch": epoch, "pos": pos, "stuck": stuck, "tokens": total_tokens}, cfg.keep_checkpoints)
        if result.complete and eval_ex and last_eval != step:
            do_eval()

    # 6. final model
    if result.complete:
        final = out / "final"
        model.save_pretrained(final, safe_serialization=True)
        tokenizer.save_pretrained(final)
        result.final_model_dir = final
        result.outputs["model"] = str(final)
    result.outputs["metrics"] = str(metrics_path)
    summary = {"objective": objective.name, "status": result.status, "reason": result.reason, "steps": step,
               "final_model_dir": str(result.final_model_dir) if result.final_model_dir else None,
               "tokens_per_second": result.tokens_per_second, "loop_seconds": result.loop_seconds,
               "prepare_seconds": prepare_seconds, "train_examples": len(train_ex), "eval_examples": len(eval_ex),
               "config": {k: v for k, v in vars(cfg).items()}}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    console.print(f"{objective.name}: {result.reason or result.status} after {step} steps, "
                  f"{result.tokens_per_second:,.0f} tokens/s; model: {result.final_model_dir or 'not saved'}")
    return result
