"""SimPO, ORPO and KTO: prefloop's trainer against TRL 1.16's trainer for the same objective, side by side.

Same setup as bench/train.py (the tiny bench Llama, the seed pairs, batch 8, max length 256, fp32, lr 5e-6
constant), each side in its own process so its peak RSS is its own. TRL: CPOTrainer with loss_type="simpo" and
cpo_alpha=0 (pure SimPO), ORPOTrainer, KTOTrainer (defaults otherwise, as TRL documents them: fused AdamW, no
precomputed reference for KTO). Both sides train on the same rows in the same order: TRL is given the rows of our
batches as our loop draws them (``train_sampling_strategy="sequential"``): pairs for SimPO and ORPO (the loss
sequences then agree, up to ORPO's NLL, which TRL also takes over the prompt tokens), and for KTO our labelled
rows (each pair split into a desirable and an undesirable answer). KTO's mismatched answers for z₀ are each
side's own (TRL: the batch's completions shifted by one; ours: the next item with another prompt), so its losses
differ slightly; the work per step is the same.

    .venv/bin/python bench/objectives.py --objective simpo --steps 20
    .venv/bin/python bench/objectives.py --objective kto --steps 20 --no-trl
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/objectives.py --objective orpo   # busy machine

On a machine shared with other work, run both sides with one thread: with two threads on two busy cores every
parallel operation waits for a descheduled thread, and the figures swing by 3x from run to run (SimPO once read
1.2x, ORPO 0.75x); with one thread each side's CPU time is its own and the ratios repeat within a few per cent.

tokens: prompt + completion per scored sequence, as TRL counts them (KTO: the labelled answer, not the
mismatched one), the same rows on both sides, so both sides count the same tokens (checked, printed).
tokens/s: those tokens over the time inside steps (TRL: on_step_begin to on_step_end); "steady": the second half
of the steps (a short run's warm-up shows in the first figure, not in this one); per CPU-second: the same tokens
over the process's CPU time in steps (less noisy on a shared machine).
prepare: our time before the first step (the reference pass: none for SimPO and ORPO).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import SETTINGS, bench_model_dir, our_config, peak_rss_mib, step_figures, trl_step_timer  # noqa: E402

OWN = {"simpo": dict(beta=2.0, simpo_gamma=0.5), "orpo": dict(beta=0.1), "kto": dict(beta=0.1)}


def our_rows(objective: str, model_dir: str, steps: int) -> tuple[list[dict], dict]:
    """The rows of our first ``steps`` batches, in the order our loop draws them, as TRL's dataset rows; and the
    model work of those batches on each side (``work``)."""
    from transformers import AutoTokenizer

    from trainer.loop import _tokenize
    from trainer.objectives import spec
    from trainer.packing import epoch_batches

    cfg = our_config(model_dir, "unused", steps, objective=objective, **OWN[objective])
    train_items, _, _ = spec(objective).build(cfg).load(cfg)
    examples, _ = _tokenize(AutoTokenizer.from_pretrained(model_dir), train_items, cfg)
    by_id = {it.id: it for it in train_items}
    rows: list[dict] = []
    batches = []
    epoch = 0
    while len(batches) < steps:
        for b in epoch_batches(examples, cfg.batch_size, seed=cfg.seed, epoch=epoch):
            if len(b) == cfg.batch_size and len(batches) < steps:
                batches.append([examples[i] for i in b])
                for i in b:
                    it = by_id[examples[i].id]
                    rows.append({"prompt": it.prompt, "completion": it.completions[0], "label": bool(it.label)}
                                if objective == "kto" else
                                {"prompt": it.prompt, "chosen": it.completions[0], "rejected": it.completions[1]})
        epoch += 1
    return rows, work(objective, batches, model_dir)


def work(objective: str, batches: list[list], model_dir: str) -> dict:
    """Each side's model work over the steps, padding included, in two measures.

    ``ours``/``trl``: token positions through the decoder in forward-pass units (a backward costs two). Ours:
    packed rows, the prompt once, SimPO/ORPO with no reference forward in the steps; KTO's mismatched answers after
    the trained forward, without gradient, on the prompts' cached keys. TRL's: each sequence padded to the batch's
    longest; CPO/ORPO one trained forward of prompt+chosen and prompt+rejected; KTO a trained forward of the
    labelled rows, a KL forward of mismatched rows without gradient, and both again through the reference.

    ``ours_gflop``/``trl_gflop``: the matmul FLOPs of the linear layers (2 per weight per position and pass), with
    the LM head where each side applies it: ours on the scored positions only, TRL's on every position (attention's
    own matmuls, small at these lengths, are left out). Both sides run their matmuls at about the same rate on one
    CPU thread, so this ratio is what tokens/s can reach at equal efficiency."""
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    kv = getattr(mc, "num_key_value_heads", None) or mc.num_attention_heads
    decoder = mc.num_hidden_layers * (2 * mc.hidden_size * mc.num_attention_heads * head_dim
                                      + 2 * mc.hidden_size * kv * head_dim + 3 * mc.hidden_size * mc.intermediate_size)
    head = mc.hidden_size * mc.vocab_size
    ours = theirs = 0
    macs = {"ours": 0, "trl": 0}
    for b in batches:
        seqs = [[len(ex.prompt_ids) + len(c) for c in ex.completions] for ex in b]
        scored = [sum(len(ex.completions[j]) for ex in b) for j in range(len(b[0].completions))]
        if objective == "kto":  # TRL's KL rows: the prompts with the mismatched answers
            main = len(b) * max(s[0] for s in seqs)
            kl = len(b) * max(s[1] for s in seqs)
            late = len(b) * max(len(ex.completions[1]) for ex in b)
            ours += 3 * main + late
            theirs += 3 * main + kl + main + kl
            macs["ours"] += (3 * main + late) * decoder + (3 * scored[0] + scored[1]) * head
            macs["trl"] += (3 * main + kl + main + kl) * (decoder + head)
        else:
            packed = len(b) * max(ex.packed_length() for ex in b)
            padded = 2 * len(b) * max(max(s) for s in seqs)
            ours += 3 * packed
            theirs += 3 * padded
            macs["ours"] += 3 * packed * decoder + 3 * sum(scored) * head
            macs["trl"] += 3 * padded * (decoder + head)
    return {"ours": ours, "trl": theirs, "ours_gflop": 2 * macs["ours"] / 1e9, "trl_gflop": 2 * macs["trl"] / 1e9}


def side_ours(objective: str, model_dir: str, steps: int, workdir: str, cap: int | None = None) -> dict:
    from rich.console import Console

    from prefloop.jsonl import read_jsonl
    from trainer.train import train

    os.environ["PREFLOOP_CACHE"] = str(Path(workdir) / "cache")  # cold cache: the reference pass is counted
    cfg = our_config(model_dir, str(Path(workdir) / "run"), steps, objective=objective, **OWN[objective],
                     max_tokens_per_batch=cap)
    result = train(cfg, Console(stderr=True))
    rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    step_tokens = [float(r["tokens"] - (rows[i - 1]["tokens"] if i else 0)) for i, r in enumerate(rows)]
    return {"tokens_per_s": result.tokens_per_second, "prepare_s": result.prepare_seconds, "tokens": result.train_tokens,
            "loop_s": result.loop_seconds, "cpu_tokens_per_s": result.train_tokens / result.loop_cpu_seconds,
            "losses": [r["loss"] for r in rows], "peak_rss_mib": peak_rss_mib(),
            **step_figures(step_tokens, [t / r["tokens/s"] for t, r in zip(step_tokens, rows)])}


def side_trl(objective: str, model_dir: str, steps: int, order_file: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ds = Dataset.from_list(json.loads(Path(order_file).read_text()))

    timer = trl_step_timer()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(SETTINGS["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    common = dict(per_device_train_batch_size=SETTINGS["batch_size"], learning_rate=SETTINGS["lr"],
                  lr_scheduler_type="constant", max_length=SETTINGS["max_length"], max_steps=steps,
                  seed=SETTINGS["seed"], bf16=False, logging_steps=1, save_strategy="no", report_to="none",
                  disable_tqdm=True, dataloader_num_workers=0, warmup_steps=0, use_cpu=True,
                  gradient_checkpointing=False, beta=OWN[objective]["beta"], train_sampling_strategy="sequential")
    with tempfile.TemporaryDirectory() as tmp:
        if objective == "simpo":
            from trl.experimental.cpo import CPOConfig, CPOTrainer
            args = CPOConfig(output_dir=tmp, loss_type="simpo", cpo_alpha=0.0,
                             simpo_gamma=OWN["simpo"]["simpo_gamma"], **common)
            trainer = CPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
        elif objective == "orpo":
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer
            args = ORPOConfig(output_dir=tmp, **common)
            trainer = ORPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
        else:
            from trl import KTOConfig, KTOTrainer
            args = KTOConfig(output_dir=tmp, **common)
            trainer = KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    per_step = [dataset_tokens(trainer.train_dataset, i * SETTINGS["batch_size"], SETTINGS["batch_size"])
                for i in range(steps)]
    tokens = sum(per_step)
    return {"tokens_per_s": tokens / timer.total if timer.total else 0.0, "loop_s": timer.total, "tokens": tokens,
            "cpu_tokens_per_s": tokens / timer.cpu, "losses": [h["loss"] for h in logs],
            "peak_rss_mib": peak_rss_mib(), "optim": str(trainer.args.optim),
            **step_figures([float(t) for t in per_step], timer.steps)}


def dataset_tokens(ds, start: int, n: int) -> int:
    """Prompt + completion tokens of rows ``start:start+n`` of TRL's tokenised set (drawn in order): TRL's count
    (KTOTrainer's own ``num_tokens``: its main batch's attention mask, not the KL batch)."""
    rows = ds.select(range(start, min(start + n, len(ds))))
    if "chosen_input_ids" in ds.column_names:  # CPO/ORPO: prompt + answer per side
        return sum(len(c) + len(r) for c, r in zip(rows["chosen_input_ids"], rows["rejected_input_ids"]))
    return sum(len(p) + len(c) for p, c in zip(rows["prompt_ids"], rows["completion_ids"]))  # KTO


def child(side: str, objective: str, model_dir: str, steps: int, order_file: str, cap: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = str(Path(work) / "result.json")
        cmd = [sys.executable, __file__, "--side", side, "--objective", objective, "--model-dir", model_dir,
               "--steps", str(steps), "--json-out", out, "--order", order_file, "--workdir", work]
        cmd += [] if cap is None else ["--max-tokens-per-batch", str(cap)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
                   TRL_EXPERIMENTAL_SILENCE="1")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{side} side failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objective", choices=sorted(OWN), required=True)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--max-tokens-per-batch", type=int, default=None,
                    help="our side's cap on the tokens of one forward (default: the trainer's, 512 on a CPU; 0: the "
                         "whole micro-batch in one forward, as before)")
    ap.add_argument("--both-caps", action="store_true",
                    help="also run our side with the whole micro-batch in one forward (cap 0), back to back")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--order", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        r = (side_ours(a.objective, a.model_dir, a.steps, a.workdir, a.max_tokens_per_batch) if a.side == "ours"
             else side_trl(a.objective, a.model_dir, a.steps, a.order))
        Path(a.json_out).write_text(json.dumps(r))
        return
    model_dir = bench_model_dir(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        order_file = str(Path(tmp) / "order.json")
        rows, units = our_rows(a.objective, model_dir, a.steps)
        Path(order_file).write_text(json.dumps(rows))
        ours = child("ours", a.objective, model_dir, a.steps, order_file, a.max_tokens_per_batch)
        whole = child("ours", a.objective, model_dir, a.steps, order_file, 0) if a.both_caps else None
        theirs = None
        if not a.no_trl:
            try:
                import trl  # noqa: F401
                theirs = child("trl", a.objective, model_dir, a.steps, order_file)
            except ImportError:
                print("trl is not installed: ours only (pip install 'prefloop[bench]')")
    print(f"{a.objective}, {a.steps} steps, batch {SETTINGS['batch_size']}, max length {SETTINGS['max_length']}, "
          f"fp32, model {a.model}; load {os.getloadavg()[0]:.2f} (1 min) at the end")

    print(f"  model work (token positions x passes, padding included): ours {units['ours']:,}, TRL {units['trl']:,}: "
          f"{units['trl'] / units['ours']:.2f}x more on TRL's side")
    print(f"  linear-layer FLOPs (LM head where each side applies it): ours {units['ours_gflop']:,.0f} G, TRL "
          f"{units['trl_gflop']:,.0f} G: {units['trl_gflop'] / units['ours_gflop']:.2f}x more on TRL's side")

    def line(name: str, r: dict) -> str:
        return (f"  {name:<5} {r['tokens_per_s']:7,.0f} tok/s (steady {r['steady_tokens_per_s']:7,.0f}, per CPU-s "
                f"{r['cpu_tokens_per_s']:6,.0f})  peak RSS {r['peak_rss_mib']:5,.0f} MiB  {r['tokens']:,.0f} tokens "
                f"in {r['loop_s']:.1f} s")

    print(line("ours", ours) + f"  prepare {ours['prepare_s']:.2f} s")
    print(f"        first losses {[round(x, 4) for x in ours['losses'][:4]]}")
    if whole:
        print(line("cap 0", whole) + "  (ours, the whole micro-batch in one forward)")
        print(f"        ours / cap 0: {ours['tokens_per_s'] / whole['tokens_per_s']:.2f}x tokens/s (per CPU-s "
              f"{ours['cpu_tokens_per_s'] / whole['cpu_tokens_per_s']:.2f}x), "
              f"{ours['peak_rss_mib'] / whole['peak_rss_mib']:.2f}x peak RSS")
    if theirs:
        print(line("TRL", theirs) + f"  ({theirs['optim']})")
        print(f"        first losses {[round(x, 4) for x in theirs['losses'][:4]]}")
        same = "the same tokens" if ours["tokens"] == theirs["tokens"] else \
            f"DIFFERENT token counts ({ours['tokens'] / theirs['tokens']:.3f}x)"
        print(f"  ours / TRL: {ours['tokens_per_s'] / max(theirs['tokens_per_s'], 1e-9):.2f}x tokens/s "
              f"(steady {ours['steady_tokens_per_s'] / max(theirs['steady_tokens_per_s'], 1e-9):.2f}x, per CPU-s "
              f"{ours['cpu_tokens_per_s'] / theirs['cpu_tokens_per_s']:.2f}x), "
              f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}x peak RSS; {same}")
        if ours["prepare_s"]:
            print(f"  with our reference pass: "
                  f"{ours['tokens'] / (ours['loop_s'] + ours['prepare_s']) / theirs['tokens_per_s']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
