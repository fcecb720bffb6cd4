"""Trainer benchmark: prefloop's DPO against TRL 1.16's DPOTrainer on the same model, data, batches and settings.

Setup (the issue's): a tiny Llama (prefloop.tiny.BENCH_SHAPE: hidden 256, 4 layers, 4 heads, 4,096-token BPE
trained locally on the pairs), the seed's 1,100 pairs, beta 0.1, lr 5e-6 constant, batch 8, max length 256, fp32,
100 steps. Each side runs in its own subprocess so its peak RSS is its own.

Tokens are counted as TRL counts them: non-pad tokens of prompt+chosen and prompt+rejected (the prompt twice).
tokens/s = tokens / time spent in training steps (TRL: on_step_begin → on_step_end; ours: the same span).
TRL is given our batches in our order (``train_sampling_strategy="sequential"``), so the two loss sequences
should agree step by step; the first ones are printed side by side.

    .venv/bin/python bench/train.py                 # tiny Llama, ours vs TRL (when trl is installed)
    .venv/bin/python bench/train.py --levers        # also time each speed lever on the same batches
    .venv/bin/python bench/train.py --model smollm2 --steps 10
    .venv/bin/python bench/train.py --model smollm2 --lora    # full vs LoRA r=16, and TRL + PEFT with LoRA
    .venv/bin/python bench/train.py --nproc 2       # one process vs two (torchrun, gloo), same global batches

With ``--lora`` the LoRA adapters of both sides start from the same seed (so the same A matrices) and adapt the
same layers (every decoder linear layer); TRL's reference is then its adapter switched off, ours the cache.
With ``--nproc N`` the N-process run is ours under torchrun (one thread each, as torchrun sets it), against
ours in one process with the machine's threads; the loss sequences must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEED_PAIRS = Path(os.environ.get("PREFLOOP_BENCH_PAIRS")  # --pairs (set for the child processes too)
                  or ROOT.parent / "shared" / "seed-data" / "instruction-data-with-preference.json")
# TRL gets the Alpaca text as a plain prompt and trains plain DPO, so ours is held to the same: the Alpaca
# rendering (not the chat turn a chat model gets by default) and no RPO term, whatever the defaults are.
SETTINGS = dict(beta=0.1, lr=5e-6, batch_size=8, max_length=256, seed=42, prompt_format="alpaca", rpo_alpha=0.0)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_gpu_mib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def bench_model_dir(name: str) -> str:
    """The tiny bench Llama (built once into the prefloop cache) or a real model folder."""
    from prefloop.models import cache_dir, resolve

    if name != "tiny":
        return resolve(name)
    from prefloop.tiny import BENCH_SHAPE, build_tiny_llama

    rows = json.loads(SEED_PAIRS.read_text())
    texts = [" ".join([r["instruction"], r.get("input", ""), r["chosen"], r["rejected"]]) for r in rows]
    return str(build_tiny_llama(cache_dir() / "bench" / "tiny-llama-256x4", texts, BENCH_SHAPE))


def our_config(model_dir: str, out: str, steps: int, **kw: object):
    from trainer.config import TrainConfig

    values = {"schedule": "constant", "dtype": "fp32", "live": False, **SETTINGS, **kw}  # a side's extras win
    return TrainConfig(model=model_dir, data=str(SEED_PAIRS), output_dir=out, max_steps=steps, **values)


def batch_order(model_dir: str, steps: int, extra: dict) -> list[list[str]]:
    """The ids of each of our first ``steps`` batches, as our loop draws them."""
    from transformers import AutoTokenizer

    from trainer.dpo import load_pairs
    from trainer.packing import epoch_batches
    from trainer.tokenize import tokenize_records

    cfg = our_config(model_dir, "unused", steps, **{k: v for k, v in extra.items()
                                                    if k in ("batch_size", "max_length", "max_prompt_length")})
    items, _ = load_pairs(cfg.data)
    tok = AutoTokenizer.from_pretrained(model_dir)
    examples, _ = tokenize_records(tok, items, prompt_format=cfg.prompt_format, max_length=cfg.max_length,
                                   max_prompt_length=None)
    order: list[list[str]] = []
    epoch = 0
    while len(order) < steps:
        for b in epoch_batches(examples, cfg.batch_size, seed=cfg.seed, epoch=epoch):
            if len(b) == cfg.batch_size and len(order) < steps:
                order.append([examples[i].id for i in b])
        epoch += 1
    return order


# ------------------------------------------------------------------------------------------------ sides

def step_figures(step_tokens: list[float], step_seconds: list[float]) -> dict:
    """First-step and steady-state tokens/s (the second half of the steps: a short run's warm-up shows in the
    first figure and not in the second)."""
    half = len(step_tokens) // 2
    return {"step_tokens": step_tokens, "step_seconds": step_seconds,
            "first_tokens_per_s": step_tokens[0] / step_seconds[0] if step_seconds else 0.0,
            "steady_tokens_per_s": (sum(step_tokens[half:]) / sum(step_seconds[half:]) if step_seconds[half:]
                                    else 0.0)}


def model_figures(model: object, lora: bool, tokens: float, sequences: int) -> dict:
    """Parameters and training FLOPs per counted token (trainer.metrics.train_flops_per_token)."""
    from trainer.metrics import train_flops_per_token

    mean_len = tokens / max(1, sequences)
    return {"flops_per_token": train_flops_per_token(model, mean_len, frozen_base=lora),
            "mean_seq_len": mean_len, "flops_rule": "6 x linear params (4 x with a frozen LoRA base) + attention "
                                                    "6 x layers x width x mean sequence length"}


def side_ours(model_dir: str, steps: int, extra: dict, workdir: str) -> dict:
    """One run of ours in ``workdir`` (shared by the processes of a torchrun launch), cold reference cache."""
    from rich.console import Console

    from prefloop.jsonl import read_jsonl
    from trainer.dpo import train

    os.environ["PREFLOOP_CACHE"] = str(Path(workdir) / "cache")  # cold reference cache: its cost is reported
    t0 = time.perf_counter()
    result = train(our_config(model_dir, str(Path(workdir) / "run"), steps, **extra), Console(stderr=True))
    wall = time.perf_counter() - t0
    rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    step_tokens = [float(r["tokens"] - (rows[i - 1]["tokens"] if i else 0)) for i, r in enumerate(rows)]
    summary = json.loads((Path(workdir) / "run" / "train_summary.json").read_text())
    return {"tokens_per_s": result.tokens_per_second, "s_per_step": result.loop_seconds / result.steps,
            "tokens": result.train_tokens, "loop_s": result.loop_seconds, "prepare_s": result.prepare_seconds,
            "cpu_tokens_per_s": result.train_tokens / result.loop_cpu_seconds,
            "wall_s": wall, "losses": [r["loss"] for r in rows], "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": peak_gpu_mib(), "logps_chosen": [r.get("logps/chosen") for r in rows],
            "logps_rejected": [r.get("logps/rejected") for r in rows],
            "flops_per_token": summary.get("flops_per_token"), "trainer_mfu": summary.get("mfu"),
            **step_figures(step_tokens, [t / r["tokens/s"] for t, r in zip(step_tokens, rows)])}


def trl_step_timer():  # noqa: ANN201 - a transformers TrainerCallback (imported lazily)
    """A callback timing each of the HF Trainer's steps (wall and CPU seconds), as our loop times its own."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.total, self.t0, self.cpu, self.c0 = 0.0, 0.0, 0.0, 0.0
            self.steps: list[float] = []

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # as our loop's step ends with the loss read back
            self.steps.append(time.perf_counter() - self.t0)
            self.total += self.steps[-1]
            self.cpu += time.process_time() - self.c0

    return StepTimer()


def side_trl(model_dir: str, steps: int, order_file: str, extra: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefloop.sources import load_preferences

    records, _ = load_preferences(SEED_PAIRS)
    by_id = {r.id: r for r in records}
    order = json.loads(Path(order_file).read_text())
    rows = [by_id[i] for batch in order for i in batch]
    ds = Dataset.from_list([{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows])

    timer = trl_step_timer()
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(SETTINGS["seed"])  # as our loop seeds before it loads the model and adds the adapter
    bf16 = extra.get("dtype") == "bf16"
    # LoRA as TRL's docs set it up: the frozen base in bf16 (the adapter stays fp32: PEFT's autocast_adapter_dtype)
    base = torch.bfloat16 if bf16 and extra.get("lora_r") else torch.float32
    on_gpu = extra.get("device", "auto") != "cpu" and torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=base, device_map={"": 0} if on_gpu else None)
    if extra.get("lora_r"):
        from peft import LoraConfig, get_peft_model

        from trainer.lora import linear_names

        model = get_peft_model(model, LoraConfig(r=extra["lora_r"], lora_alpha=2 * extra["lora_r"], lora_dropout=0.0,
                                                 target_modules=linear_names(model), task_type="CAUSAL_LM"))
    setting = {**SETTINGS, **extra}.get
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, per_device_train_batch_size=setting("batch_size"),
                         learning_rate=setting("lr"), lr_scheduler_type="constant", beta=SETTINGS["beta"],
                         max_length=setting("max_length"), max_steps=steps, seed=SETTINGS["seed"], bf16=bf16,
                         gradient_checkpointing=bool(extra.get("gradient_checkpointing", False)),
                         logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                         dataloader_num_workers=0, train_sampling_strategy="sequential", warmup_steps=0,
                         use_cpu=extra.get("device", "auto") == "cpu")
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "loss" in h and "rewards/chosen" in h]
    tokens = logs[-1]["num_tokens"]
    step_tokens = [float(h["num_tokens"] - (logs[i - 1]["num_tokens"] if i else 0)) for i, h in enumerate(logs)]
    return {"tokens_per_s": tokens / timer.total, "s_per_step": timer.total / steps, "tokens": tokens,
            "cpu_tokens_per_s": tokens / timer.cpu,
            "loop_s": timer.total, "wall_s": wall, "losses": [h["loss"] for h in logs],
            "peak_rss_mib": peak_rss_mib(), "peak_gpu_mib": peak_gpu_mib(),
            "logps_chosen": [h.get("logps/chosen") for h in logs], "logps_rejected": [h.get("logps/rejected") for h in logs],
            **model_figures(model, bool(extra.get("lora_r")), tokens, 2 * len(rows[:steps * setting("batch_size")])),
            **step_figures(step_tokens, timer.steps[:len(step_tokens)])}


def side_levers(model_dir: str, steps: int) -> dict:
    """Seconds per step of policy forward+backward+AdamW on the same batches, adding one lever at a time.

    - trl_like: [prompt+chosen; prompt+rejected] padded, full logits and log-softmax, plus a reference forward
    - no_ref: the same without the reference forward (cached reference log-probs)
    - head_at_completions: + LM head and log-softmax only where a completion token is scored
    - prompt_once: + packed [prompt|chosen|rejected] rows (the prompt's layers run once)
    - grouped: + length-grouped batches (less padding)
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.dpo import load_pairs
    from trainer.logps import packed_logps
    from trainer.packing import epoch_batches, pack
    from trainer.tokenize import tokenize_records

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = copy.deepcopy(model).eval()
    items, _ = load_pairs(str(SEED_PAIRS))
    examples, _ = tokenize_records(tok, items, prompt_format="auto", max_length=256, max_prompt_length=None)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-6)
    pad = tok.pad_token_id

    def padded(exs):
        seqs = [e.prompt_ids + e.completions[j] for j in range(2) for e in exs]
        plens = [len(e.prompt_ids) for e in exs] * 2
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad)
        am = torch.zeros((len(seqs), width), dtype=torch.long)
        cm = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            am[i, :len(s)] = 1
            cm[i, plens[i]:len(s)] = True
        return ids, am, cm

    def full_logps(m, ids, am, cm):
        lp = m(input_ids=ids, attention_mask=am).logits[:, :-1].log_softmax(-1)
        lp = lp.gather(2, ids[:, 1:, None]).squeeze(2)
        return (lp * cm[:, 1:]).sum(1)

    def head_logps(m, ids, am, cm):
        hidden = m.base_model(input_ids=ids, attention_mask=am).last_hidden_state[:, :-1]
        sel = cm[:, 1:]
        logits = m.get_output_embeddings()(hidden[sel])
        lp = -torch.nn.functional.cross_entropy(logits, ids[:, 1:][sel], reduction="none")
        return torch.zeros(ids.size(0)).index_put((sel.nonzero()[:, 0],), lp, accumulate=True)

    def step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    plain = epoch_batches(examples, 8, seed=42, epoch=0, group_by_length=False)[:steps]
    grouped = epoch_batches(examples, 8, seed=42, epoch=0, group_by_length=True)[:steps]
    variants = {
        "trl_like": (plain, lambda b: (torch.no_grad()(lambda: full_logps(ref, *padded(b)))(),
                                       step(full_logps(model, *padded(b)).sum()))),
        "no_ref": (plain, lambda b: step(full_logps(model, *padded(b)).sum())),
        "head_at_completions": (plain, lambda b: step(head_logps(model, *padded(b)).sum())),
        "prompt_once": (plain, lambda b: step(packed_logps(model, pack(b, pad))[0].sum())),
        "grouped": (grouped, lambda b: step(packed_logps(model, pack(b, pad))[0].sum())),
    }
    out = {}
    for name, (batches, fn) in variants.items():
        tokens, total = 0, 0.0
        for n, idx in enumerate(batches):
            b = [examples[i] for i in idx]
            t0 = time.perf_counter()
            fn(b)
            if n >= 2:  # warm-up
                total += time.perf_counter() - t0
                tokens += sum(e.counted_tokens() for e in b)
        out[name] = {"s_per_step": total / (len(batches) - 2), "tokens_per_s": tokens / total}
    return out


# ------------------------------------------------------------------------------------------------- parent

def child(side: str, model_dir: str, steps: int, extra: dict, order_file: str | None = None,
          nproc: int = 1) -> dict:
    """Run one side in its own process (or ``nproc`` under torchrun); its peak RSS is its own (rank 0's)."""
    with tempfile.TemporaryDirectory() as work:
        out = str(Path(work) / "result.json")
        launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      f"--nproc_per_node={nproc}"]
        cmd = launch + [__file__, "--side", side, "--model-dir", model_dir, "--steps", str(steps),
                        "--json-out", out, "--extra", json.dumps(extra), "--workdir", work]
        if order_file:
            cmd += ["--order", order_file]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{side} side failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (the issue's bench Llama) or smollm2 / any model folder")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 100 tiny, 10 otherwise)")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    ap.add_argument("--levers", action="store_true", help="also time each speed lever on the same batches")
    ap.add_argument("--bf16", action="store_true", help="both sides with bf16 autocast")
    ap.add_argument("--lora", action="store_true", help="also ours with LoRA r=16, and TRL + PEFT with the same LoRA")
    ap.add_argument("--qlora", action="store_true", help="with --lora: also ours with QLoRA (CUDA only)")
    ap.add_argument("--lora-only", action="store_true", help="with --lora: skip the full fine-tune sides")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="both sides recompute activations")
    ap.add_argument("--attention", choices=("auto", "dense", "flex"), help="our packed rows' attention "
                    "(trainer.attention; default: the trainer's auto)")
    ap.add_argument("--batch-size", type=int, help=f"pairs per step (default {SETTINGS['batch_size']})")
    ap.add_argument("--max-length", type=int, help=f"tokens per sequence (default {SETTINGS['max_length']})")
    ap.add_argument("--lr", type=float, help=f"constant learning rate (default {SETTINGS['lr']})")
    ap.add_argument("--nproc", type=int, default=1, help="also ours in this many processes (torchrun)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (both sides)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of each of our processes (0: torch's "
                                                           "default; torchrun's processes get 1 unless set)")
    ap.add_argument("--pairs", help="preference pairs to train on (default: the seed pairs beside the checkout)")
    ap.add_argument("--cpu-reference", action="store_true",
                    help="also ours on the CPU in fp32 for 3 steps: the device's losses must agree (bf16 tolerance)")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--order", help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.side:  # child process
        extra = json.loads(args.extra)
        if args.side == "ours":
            res = side_ours(args.model_dir, args.steps, extra, args.workdir)
            if os.environ.get("RANK", "0") != "0":
                return
        elif args.side == "trl":
            res = side_trl(args.model_dir, args.steps, args.order, extra)
        else:
            res = side_levers(args.model_dir, args.steps)
        Path(args.json_out).write_text(json.dumps(res))
        return

    global SEED_PAIRS
    if args.pairs:
        SEED_PAIRS = Path(args.pairs).resolve()
        os.environ["PREFLOOP_BENCH_PAIRS"] = str(SEED_PAIRS)
    if not SEED_PAIRS.exists():
        raise SystemExit(f"{SEED_PAIRS}: the seed pairs are not beside this checkout (pass --pairs FILE)")
    steps = args.steps or (100 if args.model == "tiny" else 10)
    extra = {"dtype": "bf16"} if args.bf16 else {}
    extra["device"] = args.device
    if args.threads:
        extra["threads"] = args.threads
    if args.gradient_checkpointing:
        extra["gradient_checkpointing"] = True
    if args.attention:
        extra["attention"] = args.attention
    for name in ("batch_size", "max_length", "lr"):
        if getattr(args, name) is not None:
            extra[name] = getattr(args, name)
    setting = {**SETTINGS, **extra}
    model_dir = bench_model_dir(args.model)
    print(f"model {args.model} ({model_dir}), {steps} steps, batch {setting['batch_size']}, max length "
          f"{setting['max_length']}, beta 0.1, lr {setting['lr']:g} constant, {'bf16' if args.bf16 else 'fp32'}"
          + (", gradient checkpointing" if args.gradient_checkpointing else ""))
    full = not (args.lora and args.lora_only)
    record: dict = {"model": args.model, "steps": steps, "bf16": args.bf16, "device": args.device, "settings": setting}

    def side(key: str, *a: object, **k: object) -> dict | None:
        """One side in its own process; its figures are written (--json) as soon as it ends, so a check killed by
        its time limit keeps the sides that finished; a side that fails is reported and the others still run."""
        try:
            r = child(*a, **k)
        except SystemExit as exc:
            print(f"{key}: {exc}", file=sys.stderr)
            record.setdefault("failed", {})[key] = str(exc)[-2000:]
            r = None
        else:
            print(f"[{key} done: {r['tokens_per_s']:,.0f} tok/s, first step {r.get('first_tokens_per_s', 0):,.0f}, "
                  f"steady {r.get('steady_tokens_per_s', 0):,.0f}]", flush=True)
        record[key] = r
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1))
        return r

    ours = side("ours", "ours", model_dir, steps, extra) if full else None
    try:
        import importlib.util
        has_trl = importlib.util.find_spec("trl") is not None
    except ValueError:
        has_trl = False
    use_trl = has_trl and not args.no_trl
    order_file = None
    if use_trl:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(batch_order(model_dir, steps, extra), fh)
        order_file = fh.name
    theirs = side("trl", "trl", model_dir, steps, extra, order_file) if use_trl and full else None
    lora = {**extra, "lora_r": 16}
    ours_lora = side("ours_lora", "ours", model_dir, steps, lora) if args.lora else None
    theirs_lora = side("trl_lora", "trl", model_dir, steps, lora, order_file) if args.lora and use_trl else None
    ours_q = side("ours_qlora", "ours", model_dir, steps, {**lora, "qlora": True}) if args.lora and args.qlora else None
    ours_n = side(f"ours_x{args.nproc}", "ours", model_dir, steps, extra, nproc=args.nproc) if args.nproc > 1 else None
    cpu_extra = {**{k: v for k, v in (extra if full else lora).items() if k not in ("dtype", "device", "attention")},
                 "device": "cpu"}
    on_cpu = side("ours_cpu", "ours", model_dir, min(steps, 3), cpu_extra) if args.cpu_reference else None
    if order_file:
        os.unlink(order_file)

    def line(name: str, r: dict) -> str:
        gpu = f"peak GPU {r['peak_gpu_mib']:,.0f} MiB  " if r.get("peak_gpu_mib") else ""
        return (f"{name:<13} {r['tokens_per_s']:>8,.0f} tok/s  {r['s_per_step']:.3f} s/step  {gpu}"
                f"peak RSS {r['peak_rss_mib']:,.0f} MiB  ({r['tokens']:,.0f} tokens in {r['loop_s']:.1f} s of steps, "
                f"{r['wall_s']:.1f} s wall; per CPU-second {r['cpu_tokens_per_s']:,.0f} tok)")

    def compare(label: str, a: dict, b: dict, names: tuple[str, str]) -> None:
        print(f"ratio {label:<8}{a['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s "
              f"({a['cpu_tokens_per_s'] / b['cpu_tokens_per_s']:.2f}x per CPU-second), "
              f"{a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x peak RSS")
        n = min(len(a["losses"]), len(b["losses"]))
        diffs = [abs(x - y) for x, y in zip(a["losses"][:n], b["losses"][:n])]
        for name, r in zip(names, (a, b)):
            print(f"      first losses {name:<10} " + " ".join(f"{x:.5f}" for x in r["losses"][:5]))
        print(f"      max |loss difference| over {n} steps: {max(diffs):.2e} (first 10: {max(diffs[:10]):.2e})")

    if ours:
        print(line("prefloop", ours))
        print(f"              reference log-probs computed once before the loop: {ours['prepare_s']:.1f} s "
              "(cached on disk for later runs)")
    if theirs:
        print(line("TRL", theirs))
    if theirs and ours:
        compare("", ours, theirs, ("prefloop", "TRL"))
        print(f"      including our reference pass: "
              f"{ours['tokens'] / (ours['loop_s'] + ours['prepare_s']) / theirs['tokens_per_s']:.2f}x tokens/s")
    elif not has_trl:
        print("TRL not installed (pip install '.[bench]' to compare)")
    if ours_lora:
        print(line("prefloop LoRA", ours_lora))
    if ours_lora and ours:
        print(f"ratio LoRA/full: {ours['s_per_step'] and ours_lora['s_per_step'] / ours['s_per_step']:.2f}x s/step, "
              f"{ours_lora['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x peak RSS")
    if theirs_lora:
        print(line("TRL+PEFT LoRA", theirs_lora))
    if theirs_lora and ours_lora:
        compare("LoRA", ours_lora, theirs_lora, ("prefloop", "TRL+PEFT"))
    if ours_q:
        print(line("prefloop QLoRA", ours_q))
    if ours_n:
        print(line(f"prefloop x{args.nproc}", ours_n))
    if ours_n and ours:
        compare(f"{args.nproc}p/1p", ours_n, ours, (f"{args.nproc} procs", "1 proc"))
    if on_cpu and (ours or ours_lora):
        n = len(on_cpu["losses"])
        worst = max(abs(a - b) for a, b in zip(on_cpu["losses"], (ours or ours_lora)["losses"][:n]))
        tol = 2e-2 if args.bf16 else 1e-4
        print(f"{args.device} vs CPU fp32, first {n} losses: max |difference| {worst:.2e} "
              f"({'within' if worst <= tol else 'OUTSIDE'} the {'bf16' if args.bf16 else 'fp32'} tolerance {tol:g})")
    if args.levers:
        print("levers (policy forward+backward+AdamW per step, same batches; tokens counted as TRL does):")
        for name, r in child("levers", model_dir, min(steps, 30), extra).items():
            print(f"  {name:<20} {r['tokens_per_s']:>8,.0f} tok/s  {r['s_per_step']:.3f} s/step")


if __name__ == "__main__":
    main()
