"""SimPO, ORPO and KTO: prefloop's trainer against TRL 1.16's trainer for the same objective, side by side.

Same setup as bench/train.py (the tiny bench Llama, the seed pairs, batch 8, max length 256, fp32, lr 5e-6
constant), each side in its own process so its peak RSS is its own. TRL: CPOTrainer with loss_type="simpo" and
cpo_alpha=0 (pure SimPO), ORPOTrainer, KTOTrainer on the pairs unpaired (one desirable and one undesirable row
each, as ours reads them). SimPO and ORPO sides are given our batches in our order (the loss sequences should
agree, up to ORPO's NLL, which TRL also takes over the prompt tokens); KTO's batches differ in composition
(unpaired rows), so only speed and memory compare.

    .venv/bin/python bench/objectives.py --objective simpo --steps 20
    .venv/bin/python bench/objectives.py --objective kto --steps 20 --no-trl

tokens/s: tokens as TRL counts them (non-pad prompt+completion tokens per sequence) over time inside steps.
prepare: our time before the first step (the reference pass: none for SimPO and ORPO).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import SEED_PAIRS, SETTINGS, batch_order, bench_model_dir, peak_rss_mib  # noqa: E402

OWN = {"simpo": dict(beta=2.0, simpo_gamma=0.5), "orpo": dict(beta=0.1), "kto": dict(beta=0.1)}


def side_ours(objective: str, model_dir: str, steps: int, workdir: str) -> dict:
    from rich.console import Console

    from prefloop.jsonl import read_jsonl
    from trainer.config import TrainConfig
    from trainer.train import train

    os.environ["PREFLOOP_CACHE"] = str(Path(workdir) / "cache")  # cold cache: the reference pass is counted
    cfg = TrainConfig(model=model_dir, data=str(SEED_PAIRS), output_dir=str(Path(workdir) / "run"), dtype="fp32",
                      schedule="constant", max_steps=steps, live=False, objective=objective,
                      **{**SETTINGS, **OWN[objective]})
    result = train(cfg, Console(stderr=True))
    rows = [r for r in read_jsonl(result.metrics_path) if r["split"] == "train"]
    return {"tokens_per_s": result.tokens_per_second, "prepare_s": result.prepare_seconds,
            "loop_s": result.loop_seconds, "losses": [r["loss"] for r in rows], "peak_rss_mib": peak_rss_mib()}


def side_trl(objective: str, model_dir: str, steps: int, order_file: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from prefloop.sources import load_preferences

    records, _ = load_preferences(SEED_PAIRS)
    by_id = {r.id: r for r in records}
    order = json.loads(Path(order_file).read_text())
    rows = [by_id[i] for batch in order for i in batch]
    if objective == "kto":
        ds = Dataset.from_list([{"prompt": r.prompt, "completion": c, "label": good}
                                for r in rows for c, good in ((r.chosen, True), (r.rejected, False))])
    else:
        ds = Dataset.from_list([{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows])

    class StepTimer(TrainerCallback):
        total, t0 = 0.0, 0.0

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.total += time.perf_counter() - self.t0

    timer = StepTimer()
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
    tokens = dataset_tokens(trainer.train_dataset, steps * SETTINGS["batch_size"])
    return {"tokens_per_s": tokens / timer.total if timer.total else 0.0, "loop_s": timer.total, "tokens": tokens,
            "losses": [h["loss"] for h in logs], "peak_rss_mib": peak_rss_mib()}


def dataset_tokens(ds, n: int) -> int:
    """Prompt + completion tokens of the first ``n`` rows of TRL's tokenised set (drawn in order): TRL's count."""
    rows = ds.select(range(min(n, len(ds))))
    if "chosen_input_ids" in ds.column_names:  # CPO/ORPO: prompt + answer per side
        return sum(len(c) + len(r) for c, r in zip(rows["chosen_input_ids"], rows["rejected_input_ids"]))
    return sum(len(p) + len(c) for p, c in zip(rows["prompt_ids"], rows["completion_ids"]))  # KTO


def child(side: str, objective: str, model_dir: str, steps: int, order_file: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = str(Path(work) / "result.json")
        cmd = [sys.executable, __file__, "--side", side, "--objective", objective, "--model-dir", model_dir,
               "--steps", str(steps), "--json-out", out, "--order", order_file, "--workdir", work]
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
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    ap.add_argument("--order", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side:
        r = (side_ours(a.objective, a.model_dir, a.steps, a.workdir) if a.side == "ours"
             else side_trl(a.objective, a.model_dir, a.steps, a.order))
        Path(a.json_out).write_text(json.dumps(r))
        return
    model_dir = bench_model_dir(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        order_file = str(Path(tmp) / "order.json")
        Path(order_file).write_text(json.dumps(batch_order(model_dir, a.steps)))
        ours = child("ours", a.objective, model_dir, a.steps, order_file)
        theirs = None
        if not a.no_trl:
            try:
                import trl  # noqa: F401
                theirs = child("trl", a.objective, model_dir, a.steps, order_file)
            except ImportError:
                print("trl is not installed: ours only (pip install 'prefloop[bench]')")
    print(f"{a.objective}, {a.steps} steps, batch {SETTINGS['batch_size']}, max length {SETTINGS['max_length']}, "
          f"fp32, model {a.model}")
    print(f"  ours: {ours['tokens_per_s']:8,.0f} tokens/s  peak RSS {ours['peak_rss_mib']:6,.0f} MiB  "
          f"prepare {ours['prepare_s']:.2f} s  first losses {[round(x, 4) for x in ours['losses'][:3]]}")
    if theirs:
        print(f"  TRL:  {theirs['tokens_per_s']:8,.0f} tokens/s  peak RSS {theirs['peak_rss_mib']:6,.0f} MiB  "
              f"             first losses {[round(x, 4) for x in theirs['losses'][:3]]}")
        print(f"  ours / TRL: {ours['tokens_per_s'] / max(theirs['tokens_per_s'], 1e-9):.2f}x tokens/s, "
              f"{ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
