"""The ``prefloop`` command.

Only the chosen command's module is imported, and those modules import torch, transformers or ollama inside
their ``main``, so ``prefloop --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with add_arguments(parser) and main(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generator.cli", "write preference pairs by asking a model (Ollama, OpenAI-compatible or local)"),
    "sft": ("trainer.cli_sft", "supervised fine-tuning on prompt/response data (base -> SFT)"),
    "train": ("trainer.cli", "DPO training of an SFT model on preference pairs"),
    "judge": ("judge.cli", "held-out win rate of a trained model against its reference"),
    "run": ("prefloop.loop", "the whole loop from one TOML config: generate, split, train, judge, report"),
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
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"prefloop {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is on disk; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
