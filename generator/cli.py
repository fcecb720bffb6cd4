"""``prefloop generate``: flags, a TOML ``[generate]`` section and ``--set key=value`` (later wins: TOML, flags,
``--set``). Exit codes: 0 all done, 1 some prompts failed (rerun to retry them), 2 bad setup, 130 interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--output", {"dest": "output", "metavar": "PAIRS.jsonl", "help": "preference pairs JSONL (rerun resumes it)"}),
    ("--strategy", {"choices": ["rewrite", "rank", "contrast"], "help": "rewrite (default), rank or contrast"}),
    ("--model", {"help": "writing model: ollama:NAME (or bare NAME), openai:NAME@URL, local:NAME "
                         "(default local:smollm2)"}),
    ("--models", {"help": "rank: comma-separated candidate models (default: --model)"}),
    ("--judge", {"help": "rank: scoring model (default: --model)"}),
    ("--sft-model", {"dest": "sft_model", "help": "contrast: the model whose answers are rejected"}),
    ("--axis", {"help": "rewrite: the axis (default politeness)"}),
    ("--better", {"help": "rewrite: the better direction (default polite)"}),
    ("--worse", {"help": "rewrite: the worse direction (default impolite)"}),
    ("--recipe-prompt", {"dest": "recipe_prompt", "choices": ["auto", "clean", "verbatim", "fewshot"],
                         "help": "rewrite: our wording (clean), the ch07 notebook's (verbatim), worked examples "
                                 "(fewshot); auto = fewshot for local models, clean otherwise"}),
    ("--k", {"type": int, "help": "rank: candidates per prompt (default 4)"}),
    ("--min-margin", {"dest": "min_margin", "type": float, "help": "rank: minimum best-worst score gap"}),
    ("--temperature", {"type": float}),
    ("--max-tokens", {"dest": "max_tokens", "type": int}),
    ("--num-ctx", {"dest": "num_ctx", "type": int}),
    ("--seed", {"type": int}),
    ("--limit", {"type": int, "help": "first N prompts only"}),
    ("--concurrency", {"type": int, "help": "requests in flight (default: match the server's parallel slots)"}),
    ("--timeout", {"dest": "timeout_s", "type": float, "help": "seconds per request"}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="prompts: Alpaca JSON/JSONL, JSONL with 'prompt', .txt, HF dataset")
    for flag, kwargs in FLAGS:
        names = [flag, "-o"] if flag == "--output" else [flag]
        parser.add_argument(*names, default=None, **kwargs)
    parser.add_argument("--fsync", action="store_true", default=None, help="fsync every pair (power-loss safety)")
    parser.add_argument("--skip-bad", dest="skip_bad", action="store_true", default=None,
                        help="skip bad prompt records (counted) instead of stopping")
    parser.add_argument("--quiet", "-q", action="store_true", default=None, help="no progress bar")
    parser.add_argument("--config", help="TOML file; its [generate] section holds these settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set k=8 (or generate.k=8); repeatable")


def build_config(args: argparse.Namespace) -> Any:
    """TOML [generate], then flags, then --set, into a checked ``GenerateConfig``."""
    from generator.config import GenerateConfig
    from prefloop.config import load_section

    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(GenerateConfig)}
    if isinstance(flags.get("models"), str):
        flags["models"] = [m.strip() for m in flags["models"].split(",") if m.strip()]
    return load_section(GenerateConfig, "generate", args.config, args.overrides, flags)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from generator.run import generate
    from prefloop.config import ConfigError
    from prefloop.llm.base import LLMError
    from prefloop.records import RecordError
    from prefloop.sources import DataError

    console = Console(stderr=True)
    try:
        cfg = build_config(args)
        if not cfg.source or not cfg.output:
            console.print("error: give the prompts (SOURCE) and --output PAIRS.jsonl (or set them in --config)")
            return 2
        summary = generate(cfg, console=console)
    except (ConfigError, DataError, RecordError, LLMError, ValueError, RuntimeError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    if summary.interrupted:
        return 130
    return 1 if summary.failed or summary.aborted else 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="prefloop generate")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
