"""``prefloop judge``: flags made from ``JudgeConfig`` (``prefloop.flags``), a TOML ``[judge]`` section and
``--set key=value`` (later wins: TOML, flags, ``--set``).

Exit codes: 0 done, 1 some judgments missing (judge server failed; rerun resumes from the cache), 2 bad setup,
130 interrupted (the last complete results are left as they were).
"""

from __future__ import annotations

import argparse

from judge.config import JudgeConfig
from prefloop.flags import add_common, add_config_flags, fail, settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "judge")
    add_config_flags(parser, JudgeConfig)
    parser.add_argument("--no-reference-answer", dest="show_known_good", action="store_false", default=None,
                        help=argparse.SUPPRESS)  # the old spelling of --no-show-known-good, for one release


def build_config(args: argparse.Namespace) -> JudgeConfig:
    return settings(args, JudgeConfig, "judge")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from judge.evaluate import evaluate
    from judge.label import NeedsTerminal
    from judge.prompts import TemplateError
    from prefloop.config import ConfigError
    from prefloop.files import Busy
    from prefloop.llm.base import LLMError, ServerFatal
    from prefloop.records import RecordError
    from prefloop.report import pct
    from prefloop.sources import DataError

    try:
        cfg = build_config(args)
        if not cfg.policy:
            raise ConfigError("judge: no policy model (--policy MODEL)")
        console = Console(stderr=True, quiet=cfg.quiet)
        result = evaluate(cfg, console=console)
    except (ConfigError, DataError, RecordError, TemplateError, ServerFatal, Busy, NeedsTerminal, OSError,
            ValueError) as exc:
        return fail(exc)
    except LLMError as exc:
        return fail(f"{exc}\nfinished judgments are cached; run the same command again to resume", 1)
    if result.interrupted:
        return fail(result.reason, result.exit_code)
    from judge.report import headline, order_lines

    head = result.headline
    if not result.complete:  # no headline from an incomplete run: its figures would read as a result
        fail(f"no complete result: {result.reason}", result.exit_code)
    else:
        if head.n and not head.at_chance:  # a judge at chance gets no win rate, here as in the headline
            print(f"win rate {pct(head.win_rate)}  95% CI [{pct(head.ci_low)}, {pct(head.ci_high)}]  "
                  f"LC {pct(head.lc_win_rate)}  (wins {head.wins}, ties {head.ties}, losses {head.losses}, "
                  f"n {head.n}; judge {head.judge})")
        for line in headline(result).plain() + order_lines(result):
            print(line)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"report: {result.outputs.get('report')}")
    return result.exit_code
