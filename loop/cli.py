"""The ``prefloop`` command: one subcommand per stage plus ``run`` (the loop).

The subcommands' modules define ``add_arguments(parser)`` and ``main(args) -> int`` and import torch,
transformers or ollama only inside ``main``, so ``prefloop --help`` (and any ``--help``) answers at once.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from generator import cli as generate_cli
from judge import cli as judge_cli
from judge import cli_label as label_cli
from loop import export as export_cli
from loop import run as run_cli
from trainer import cli as train_cli
from trainer import cli_sft as sft_cli

COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "generate": (generate_cli, "write preference pairs by asking a model (Ollama, OpenAI-compatible or local)"),
    "sft": (sft_cli, "supervised fine-tuning on prompt/response data (base -> SFT)"),
    "train": (train_cli, "DPO training of an SFT model on preference pairs"),
    "judge": (judge_cli, "held-out win rate of a trained model against its reference"),
    "export": (export_cli, "a trained model into Ollama: an export folder, created on the server, verified"),
    "label": (label_cli, "a person picks the better answer in the terminal, or imports labels: preference pairs"),
    "run": (run_cli, "the whole loop from one TOML config: generate, split, train, judge, report"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefloop",
        description="Preference data, DPO and held-out win rates on one workstation.",
        epilog="Run 'prefloop COMMAND --help' for a command's settings.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        args = _top_parser().parse_args(argv)
        if args.version:
            from prefloop import __version__
            print(__version__)
            return 0
        _top_parser().print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    module, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"prefloop {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from prefloop.errors import PrefloopError, problem
    from prefloop.flags import fail

    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is on disk; run the same command again to resume", file=sys.stderr)
        return 130
    except PrefloopError as exc:  # the one place every command's errors end: one line, the class's exit code
        return fail(exc, exc.exit_code)
    except OSError as exc:        # a read-only folder, a full disk, a folder where a file was meant
        return fail(problem(exc), 2)


if __name__ == "__main__":
    sys.exit(main())
