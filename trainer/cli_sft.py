"""``prefloop sft``: supervised fine-tuning on prompt/response data (NLL on the responses only).

Same settings as ``prefloop train`` minus the DPO ones; ``--config`` reads the [train] section.
"""

from __future__ import annotations

import argparse

from trainer.cli import FLAGS, add_common, run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, FLAGS)


def main(args: argparse.Namespace) -> int:
    return run_command(args, FLAGS, sft=True)
