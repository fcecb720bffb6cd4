"""``prefloop label``: flags made from ``LabelConfig`` (``prefloop.flags``), a TOML ``[label]`` section and
``--set key=value``. textual is imported only when the screen opens (``pip install 'prefloop[label]'``).

Exit codes: 0 labelled or quit on purpose (the same command resumes), 2 bad setup.
"""

from __future__ import annotations

import argparse

from judge.config import LabelConfig
from prefloop.flags import add_common, add_config_flags, fail, settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="what to compare: JSONL of {prompt, answers: [...]}, the rank "
                                                  "strategy's pairs, or a pairs file to re-label or check; "
                                                  "--mode thumbs also reads {prompt, completion, label?} rows")
    add_common(parser, "label")
    add_config_flags(parser, LabelConfig)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from judge.label import NeedsTerminal, label, print_summary
    from judge.thumbs import label_thumbs, print_summary as print_thumbs
    from prefloop.config import ConfigError
    from prefloop.files import Busy
    from prefloop.records import RecordError
    from prefloop.sources import DataError

    try:
        cfg = settings(args, LabelConfig, "label", source=args.source)
        if not cfg.output or not (cfg.source or cfg.import_labels):
            return fail("give what to compare (SOURCE) or --import FILE, and --output PAIRS.jsonl"
                        + (" (--mode thumbs: LABELLED.jsonl)" if cfg.mode == "thumbs" else ""))
        result = label_thumbs(cfg) if cfg.mode == "thumbs" else label(cfg, console=Console(stderr=True))
    except (ConfigError, DataError, RecordError, Busy, NeedsTerminal, ValueError, OSError) as exc:
        return fail(exc)
    if not cfg.quiet:
        (print_thumbs if cfg.mode == "thumbs" else print_summary)(result, Console(stderr=True))  # type: ignore
    return 0 if result.status != "failed" else 1
