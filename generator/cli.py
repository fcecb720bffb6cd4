"""``prefloop generate``: flags made from ``GenerateConfig`` (``prefloop.flags``), a TOML ``[generate]`` section and
``--set key=value`` (later wins: TOML, flags, ``--set``).

Exit codes: 0 all done, 1 some prompts failed (rerun to retry them), 2 bad setup, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from generator.config import GenerateConfig
from prefloop.flags import add_common, add_config_flags, fail, settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="prompts: Alpaca JSON/JSONL, JSONL with 'prompt', .txt, dataset")
    add_common(parser, "generate")
    add_config_flags(parser, GenerateConfig)


def build_config(args: argparse.Namespace) -> GenerateConfig:
    return settings(args, GenerateConfig, "generate", source=args.source)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from generator.run import generate
    from prefloop.config import ConfigError
    from prefloop.files import Busy
    from prefloop.llm.base import LLMError
    from prefloop.records import RecordError
    from prefloop.sources import DataError

    try:
        cfg = build_config(args)
        if not cfg.source or not cfg.output:
            return fail("give the prompts (SOURCE) and --output PAIRS.jsonl (or set them in --config)")
        summary = generate(cfg, console=Console(stderr=True))  # --quiet: no progress bar; the summary stays
    except (ConfigError, DataError, RecordError, LLMError, Busy, ValueError, OSError) as exc:
        return fail(exc)
    return summary.exit_code


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="prefloop generate")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
