"""``prefloop train`` (DPO) and ``prefloop sft``: flags made from ``TrainConfig`` (``prefloop.flags``).

Settings come from ``--config run.toml`` ([train] section), then the flags, then ``--set key=value`` (the same
order as every prefloop command). Heavy imports happen inside ``main`` so ``--help`` is instant.
Exit codes: 0 completed, 1 stopped early (non-finite values), 2 bad setup or a failed write, 130 interrupted
(a checkpoint was written: ``--resume`` continues).

``--nproc N`` runs the same command in N processes through torchrun. Under torchrun only rank 0 prints the result
and errors: the processes read the same settings and data, and a failure in one is passed to all of them.
"""

from __future__ import annotations

import argparse
import os
import sys

from prefloop.flags import add_common, add_config_flags, fail, settings
from trainer.config import TrainConfig

DPO_ONLY = ("beta", "loss_type", "label_smoothing", "rpo_alpha", "logp_average", "reference")


def add_arguments(parser: argparse.ArgumentParser, *, sft: bool = False) -> None:
    add_common(parser, "train")
    add_config_flags(parser, TrainConfig, skip=DPO_ONLY if sft else ())


def build_config(args: argparse.Namespace) -> TrainConfig:
    return settings(args, TrainConfig, "train")


def main(args: argparse.Namespace, *, sft: bool = False) -> int:
    from rich.console import Console

    from prefloop.config import ConfigError
    from prefloop.models import ModelNotFound
    from trainer.data import TrainError

    console = Console(stderr=True, quiet=bool(args.quiet))
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        cfg = build_config(args)
        if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:
            from trainer.distributed import launch
            return launch(cfg, "sft" if sft else "train", quiet=bool(args.quiet))
        if sft:
            from trainer.sft import train_sft
            result = train_sft(cfg, console)
        else:
            from trainer.dpo import train
            result = train(cfg, console)
    except (ConfigError, TrainError, ModelNotFound) as exc:
        return fail(exc) if main_process else 2
    finally:
        if "WORLD_SIZE" in os.environ:
            from trainer.distributed import stop
            stop()
    if result.complete and main_process:
        print(result.final_model_dir)
    return result.exit_code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="prefloop train")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
