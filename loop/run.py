"""``prefloop run CONFIG.toml``: the whole loop from one config, in one run folder (``loop.stages``).

Exit codes: 0 every stage done, 1 a stage stopped or finished with gaps (the message says why; finished work
stays; a rerun retries the gaps), 2 a bad config,
130 interrupted (the same command resumes).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the loop's TOML config (try data/quickstart.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set train.beta=0.2 (repeatable)")
    parser.add_argument("-o", "--output", metavar="RUN_DIR",
                        help="run folder (default: [run] output_dir, else runs/<config name>)")
    parser.add_argument("--out", dest="output", help=argparse.SUPPRESS)  # the old spelling, for one release
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the run folder")


def main(args: argparse.Namespace) -> int:
    from loop.config import load_loop_config
    from prefloop.config import ConfigError
    from prefloop.flags import fail

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"run.output_dir={json.dumps(args.output)}")
    try:
        cfg = load_loop_config(args.config, overrides)
    except ConfigError as exc:
        return fail(exc)
    if args.report_only:
        from loop.report import write_run_report
        from prefloop.fingerprint import STATE_FILE

        if not (cfg.run_dir / STATE_FILE).exists():  # a typo in -o would get an empty report of nothing
            return fail(f"--report-only: {cfg.run_dir} is not a run folder (no {STATE_FILE}); give the folder of a "
                        "run (-o RUN_DIR, or [run] output_dir)")

        html_path, _ = write_run_report(cfg.run_dir, cfg)
        print(html_path)
        return 0
    from transformers.utils import logging as hf_logging

    from loop.stages import Loop

    hf_logging.disable_progress_bar()  # "Loading weights" bars for every model load drown the stage lines
    if cfg.run.threads:
        import torch

        torch.set_num_threads(cfg.run.threads)
    return Loop(cfg).run()
