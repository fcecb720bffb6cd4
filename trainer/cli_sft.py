"""``prefloop sft``: supervised fine-tuning on prompt/response data (NLL on the responses only).

Same settings as ``prefloop train`` minus the DPO ones; ``--config`` reads the [train] section.
"""

from __future__ import annotations

import argparse

from trainer import cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_arguments(parser, objective="sft")


def main(args: argparse.Namespace) -> int:
    return cli.main(args, objective="sft")
