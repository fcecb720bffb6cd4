"""The run folder's report (``report.html`` + ``report.md``), built only from what the run folder holds, so it can
be rewritten at any time (``prefloop run CONFIG --report-only``) and shows a half-finished run as it is.

It is made of the stages' own report sections: the judge's report (``judge.report``, embedded whole through
``Report.extend``), the preflight check (``judge.preflight``), the generation summary (``generator.report``) and
the training curves (``trainer.report``); this module adds only what is the loop's: the warnings of the run, the
split, the stage table and what to do next. Order follows what a reader needs: the headline (the judge's validated
accuracy, the win rate it may give, the held-out reward accuracy and the skill kept) and what could make it
meaningless first, then the run's own warnings, how the data and the training went, then the answers themselves.
"""

from __future__ import annotations

import time
from pathlib import Path

from generator.report import add_generation_section
from judge.preflight import add_preflight_section
from judge.report import JudgeFolder, add_examples
from judge.results import JudgeResults
from loop.config import LoopConfig, stage_paths
from loop.rounds import add_rounds_section, held_out_reward_accuracy
from prefloop.llm.base import parse_spec
from prefloop.report import Report, is_number, load_json, pct
from trainer.report import add_training_section

HOW_TO_SCALE_UP = (
    "To use Ollama and a stronger judge, edit the config: [generate] model = \"ollama:llama3.1:70b\" (or any "
    "model `ollama list` shows), [judge] judges = [\"ollama:llama3.1:8b\"] (or \"openai:MODEL@URL\"), and point "
    "[data] prompts at your own prompt set; data/reference-recipe.toml is the full-size recipe.")


ROUNDS_WHEN_BELOW = 0.60   # a one-round win rate whose interval reaches down to this has not clearly moved
RANKER_LOW = 0.70          # a judge that ranks a round's samples: its validation interval's low end at least this


def rounds_hint(rounds: int, results: JudgeResults) -> str | None:
    """After a one-round run whose judge validated clearly on the held-out pairs (its accuracy interval from
    ``RANKER_LOW`` up: it will pick the pairs the rounds train on, so above chance is not enough; the quickstart's
    135M judge, 57-100 % on 7 pairs, is not) and whose model kept its skill, but whose win rate's interval reaches
    down to ``ROUNDS_WHEN_BELOW``: the measured next step. One pass with the NLL term learns the data's own answers
    (on the seed, 41 %); rounds go past them on the model's own answers ranked by that judge (83 % at round 4,
    content kept). None otherwise: no judge to rank with (a person, or one not clearly right), a model that lost
    the skill (the headline names those levers), or a preference that moved."""
    head, ret = results.headline, results.retention
    v = head.validation
    if rounds > 1 or not head.n or v is None or not v.n or parse_spec(head.judge).person:
        return None
    if not is_number(v.ci[0]) or v.ci[0] < RANKER_LOW:
        return None
    if ret is None or ret.lost or (is_number(head.ci_low) and head.ci_low > ROUNDS_WHEN_BELOW):
        return None
    return (f"judge {head.judge} validates on your held-out pairs and the model kept its skill, but the preference "
            f"moved little ({pct(head.win_rate)}, its interval down to {pct(head.ci_low)}). Rounds train again on the "
            "model's own answers, ranked by that judge: --set run.rounds=4 --set rounds.lr=1e-5 (on the seed's pairs "
            "41% after one pass, 83% at round 4 with the content kept: README, Rounds); the loop stops sooner when a "
            "round loses the skill or collapses onto one phrase.")


def uses_local_models(cfg: LoopConfig) -> bool:
    """The writer or a judge is an in-process model (the quickstart): worth saying how to scale up."""
    return any(parse_spec(s).backend == "local" for s in [cfg.generate.model, *cfg.judges])


def write_run_report(run_dir: str | Path, cfg: LoopConfig | None = None, *, warnings: list[str] | None = None,
                     failed: str | None = None, n_examples: int = 8) -> tuple[Path, Path]:
    """Build the report from ``run_dir`` and write ``report.html`` / ``report.md`` there."""
    run_dir = Path(run_dir)
    paths = stage_paths(run_dir)
    plots = run_dir / "plots"
    report = Report(f"prefloop run: {cfg.name if cfg else run_dir.name}",
                    subtitle=f"run folder `{run_dir}` · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if failed:
        report.warning(f"The run stopped early: {failed}")
    add_rounds_section(report, run_dir, plots)
    judge = JudgeFolder.read(paths.judge)
    judge_report = judge.report(n_examples=0, reward_accuracy=held_out_reward_accuracy(paths.train))
    if judge_report is not None:
        report.extend(judge_report)
    else:
        report.heading("Held-out win rate")
        report.paragraph("No judge results yet: the judge stage has not finished (see the stage table below).")
    shown = set(judge.results.warnings if judge.results else [])
    loop_warnings = [w for w in dict.fromkeys(warnings or []) if w not in shown]
    if loop_warnings:
        report.heading("Warnings from the run")
        for text in loop_warnings:
            report.warning(text)
    add_preflight_section(report, paths.preflight)
    add_generation_section(report, paths.pairs)
    _split_section(report, paths.split)
    add_training_section(report, paths.train, plots)
    add_examples(report, judge.answers, judge.rows, judge.results.judge if judge.results else "", n_examples,
                 level=2)
    _stages_section(report, run_dir)
    _next_steps(report, cfg)
    return report.write(run_dir, "report")


def _split_section(report: Report, split_dir: Path) -> None:
    s = load_json(split_dir / "summary.json")
    if not s:
        return
    report.heading("Held-out split")
    report.paragraph("Whole prompts are held out, chosen by a hash of the prompt text: no held-out prompt reaches "
                     "training. Pairs of held-out prompts feed only the eval curves and the judge's validation "
                     "(their chosen side is the better one by construction).")
    report.key_values({"training pairs": s.get("train_pairs"), "held-out prompts (judged)": s.get("heldout_prompts"),
                       "held-out pairs (eval curves, judge validation)": s.get("heldout_pairs"),
                       "prompts without a pair": s.get("prompts_without_pairs")})


def _stages_section(report: Report, run_dir: Path) -> None:
    state = (load_json(run_dir / "state.json") or {}).get("stages", {})
    if not state:
        return
    report.heading("Stages")
    report.table([{"stage": name, "status": rec.get("status"), "fingerprint": rec.get("fingerprint"),
                   "runs": rec.get("runs"), "seconds (last run)": (rec.get("info") or {}).get("seconds")}
                  for name, rec in state.items()])
    report.paragraph("A stage is skipped when its fingerprint (settings + inputs) matches a finished run; change a "
                     "setting and only that stage and the ones after it run again.")


def _next_steps(report: Report, cfg: LoopConfig | None) -> None:
    report.heading("Next")
    if cfg is None or uses_local_models(cfg):
        report.paragraph(HOW_TO_SCALE_UP)
    report.paragraph("If the preflight warned that the model cannot do the task, DPO will not fix that: fine-tune "
                     "first (`prefloop sft`), then run this loop on the SFT model.")
