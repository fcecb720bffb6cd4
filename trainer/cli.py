"""``prefloop train``: DPO from the command line.

Settings come from ``--config run.toml`` ([train] section), then the flags below, then ``--set key=value``
overrides (the same order as every prefloop command). Heavy imports happen inside ``main`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# flag -> (TrainConfig field, type, help)
FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "model folder, Hub name, .gguf file or 'smollm2' (the embedded SmolLM2-135M-Instruct)"),
    ("--data", "data", str, "training data (JSONL/JSON/dataset folder)"),
    ("--output-dir", "output_dir", str, "where metrics, checkpoints and the final model go"),
    ("--eval-data", "eval_data", str, "held-out data (else --eval-split of --data)"),
    ("--eval-split", "eval_split", float, "fraction of --data held out for evaluation"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--schedule", "schedule", str, "constant | linear | cosine"),
    ("--warmup-steps", "warmup_steps", int, "linear warmup steps"),
    ("--batch-size", "batch_size", int, "examples per micro-batch"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step"),
    ("--epochs", "epochs", float, "passes over the data"),
    ("--max-steps", "max_steps", int, "optimizer steps (overrides --epochs)"),
    ("--max-length", "max_length", int, "prompt + completion tokens per sequence"),
    ("--max-prompt-length", "max_prompt_length", int, "skip pairs whose prompt is longer"),
    ("--dtype", "dtype", str, "fp32 | bf16"),
    ("--device", "device", str, "auto (GPU when present) | cpu | cuda | cuda:N | mps"),
    ("--prompt-format", "prompt_format", str, "auto | text | chat | alpaca"),
    ("--seed", "seed", int, "random seed"),
    ("--eval-every", "eval_every", int, "optimizer steps between evaluations"),
    ("--save-every", "save_every", int, "optimizer steps between checkpoints"),
    ("--threads", "threads", int, "torch CPU threads (0: default)"),
]
DPO_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--beta", "beta", float, "DPO beta (> 0)"),
    ("--loss-type", "loss_type", str, "sigmoid | cdpo | ipo | hinge | robust"),
    ("--label-smoothing", "label_smoothing", float, "epsilon for cdpo / robust"),
    ("--rpo-alpha", "rpo_alpha", float, "weight of an NLL term on the chosen answer"),
    ("--reference", "reference", str, "cached (default) | model"),
]


def add_common(parser: argparse.ArgumentParser, flags: list[tuple[str, str, Any, str]]) -> None:
    parser.add_argument("--config", help="TOML file; its [train] section is read")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one [train] setting (repeatable), e.g. --set beta=0.2")
    for flag, dest, typ, text in flags:
        parser.add_argument(flag, dest=dest, type=typ, default=None, help=text)
    parser.add_argument("--logp-average", dest="logp_average", action="store_const", const=True, default=None,
                        help="mean of token log-probs instead of the sum")
    parser.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_const",
                        const=True, default=None, help="recompute activations in backward (less memory)")
    parser.add_argument("--resume", dest="resume", action="store_const", const=True, default=None,
                        help="continue from the newest checkpoint in --output-dir")
    parser.add_argument("--no-live", dest="live", action="store_const", const=False, default=None,
                        help="no live progress view")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, FLAGS + DPO_FLAGS)


def build_config(args: argparse.Namespace, flags: list[tuple[str, str, Any, str]]) -> Any:
    from trainer.config import load_train_config

    names = [dest for _, dest, _, _ in flags] + ["logp_average", "gradient_checkpointing", "resume", "live"]
    values = {n: getattr(args, n, None) for n in names}
    return load_train_config(args.config, args.set, **values)


def run_command(args: argparse.Namespace, flags: list[tuple[str, str, Any, str]], sft: bool) -> int:
    from rich.console import Console

    from prefloop.config import ConfigError
    from prefloop.models import ModelNotFound
    from trainer.loop import TrainError

    console = Console(stderr=True)
    try:
        cfg = build_config(args, flags)
        if sft:
            from trainer.sft import train_sft
            result = train_sft(cfg, console)
        else:
            from trainer.dpo import train
            result = train(cfg, console)
    except (ConfigError, TrainError, ModelNotFound) as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    if result.stopped_reason != "completed":
        return 1
    print(result.final_model_dir)
    return 0


def main(args: argparse.Namespace) -> int:
    return run_command(args, FLAGS + DPO_FLAGS, sft=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="prefloop train")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
