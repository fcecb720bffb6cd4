"""``prefloop train`` (any objective of ``trainer.objectives``; DPO by default) and ``prefloop sft``: flags made from ``TrainConfig`` (``prefloop.flags``).

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

import dataclasses

from prefloop.flags import add_common, add_config_flags, fail, settings
from trainer.config import TrainConfig
from trainer.objectives import settings_not_for


def add_arguments(parser: argparse.ArgumentParser, *, objective: str | None = None) -> None:
    """The [train] flags; a command fixed to one ``objective`` hides the others' settings and ``--objective``."""
    add_common(parser, "train")
    add_config_flags(parser, TrainConfig, skip=("objective", *settings_not_for(objective)) if objective else ())


def build_config(args: argparse.Namespace, objective: str | None = None) -> TrainConfig:
    cfg = settings(args, TrainConfig, "train")
    return dataclasses.replace(cfg, objective=objective) if objective and cfg.objective != objective else cfg


def main(args: argparse.Namespace, *, objective: str | None = None) -> int:
    from rich.console import Console

    from prefloop.config import ConfigError
    from prefloop.models import ModelNotFound
    from trainer.data import TrainError

    console = Console(stderr=True, quiet=bool(args.quiet))
    main_process = os.environ.get("RANK", "0") == "0"
    try:
        cfg = build_config(args, objective)
        if cfg.nproc > 1 and "WORLD_SIZE" not in os.environ:
            from trainer.distributed import launch
            return launch(cfg, "train", quiet=bool(args.quiet))
        from trainer.train import train
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
