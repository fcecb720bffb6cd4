"""``prefloop judge``: flags, a TOML ``[judge]`` section and ``--set key=value`` (later wins: TOML, flags, ``--set``).

Exit codes: 0 done, 1 some judgments missing (judge server failed; rerun resumes from the cache), 2 bad setup,
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--policy", {"help": "the trained model: a folder, a .gguf, or smollm2"}),
    ("--reference", {"help": "its starting point, the SFT model (default smollm2)"}),
    ("--prompts", {"help": "held-out prompts: Alpaca JSON/JSONL, JSONL with 'prompt', .txt, or a pairs file"}),
    ("--judge", {"dest": "judges", "action": "append",
                 "help": "judge spec: ollama:NAME, openai:NAME@URL, local:NAME; repeat for several judges"}),
    ("--out", {"dest": "out_dir", "help": "output folder (default runs/judge)"}),
    ("--limit", {"type": int, "help": "first N prompts only"}),
    ("--template", {"help": "judge prompt template: 'pairwise' or a path to your own file"}),
    ("--max-new-tokens", {"dest": "max_new_tokens", "type": int, "help": "answer length cap (default 256)"}),
    ("--temperature", {"type": float, "help": "answer sampling temperature (default 0: greedy)"}),
    ("--batch-size", {"dest": "batch_size", "type": int, "help": "answers generated per batch (default 8)"}),
    ("--concurrency", {"type": int, "help": "judge calls in flight (default 4; match OLLAMA_NUM_PARALLEL)"}),
    ("--verdict", {"choices": ["auto", "generate", "logprob"],
                   "help": "how a verdict is read: generated JSON, or a local judge's token probabilities "
                           "(auto: logprob for local: judges)"}),
    ("--attempts", {"type": int, "help": "calls per order before a reply counts as unparseable (default 3)"}),
    ("--cache", {"help": "judgment cache file (default OUT/judge-cache.sqlite)"}),
    ("--pairs", {"help": "training pairs file, to warn when the judge generated them (self-preference)"}),
    ("--generator-model", {"dest": "generator_model", "help": "model that generated the training pairs"}),
    ("--adversarial", {"type": int, "help": "also measure the judge's flip rate under adversarial edits on N "
                                            "prompts (default 0: off)"}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, kwargs in FLAGS:
        parser.add_argument(flag, default=None, **kwargs)
    parser.add_argument("--no-reference-answer", dest="use_reference", action="store_false", default=None,
                        help="do not show the prompt's known-good answer to the judge")
    parser.add_argument("--config", help="TOML file; its [judge] section holds these settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set n_boot=5000 (or judge.n_boot=5000); repeatable")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def build_config(args: argparse.Namespace) -> Any:
    """TOML [judge], then flags, then --set, into a checked ``JudgeConfig``."""
    from judge.config import JudgeConfig
    from prefloop.config import load_section

    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(JudgeConfig)}
    return load_section(JudgeConfig, "judge", args.config, args.overrides, flags)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from judge.evaluate import evaluate
    from judge.prompts import TemplateError
    from prefloop.config import ConfigError
    from prefloop.llm.base import LLMError, ServerFatal
    from prefloop.records import RecordError
    from prefloop.report import pct
    from prefloop.sources import DataError

    console = Console(stderr=True, quiet=args.quiet)
    try:
        cfg = build_config(args)
        if not cfg.policy:
            raise ConfigError("judge: no policy model (--policy MODEL)")
        result = evaluate(cfg, console=console)
    except (ConfigError, DataError, RecordError, TemplateError, ServerFatal, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except LLMError as exc:
        console.print(f"[red]error:[/] {exc}\nfinished judgments are cached; run the same command again to resume")
        return 1
    r = result.results
    out = Console()
    if r.get("n"):
        out.print(f"win rate {pct(r['win_rate'])}  95% CI [{pct(r['ci_low'])}, {pct(r['ci_high'])}]  "
                  f"LC {pct(r['lc_win_rate'])}  (wins {r['wins']}, ties {r['ties']}, losses {r['losses']}, "
                  f"n {r['n']}; judge {r['judge']})")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"report: {result.out_dir / 'report.html'}")
    return 0 if result.complete else 1
