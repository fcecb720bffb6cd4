"""The generator's part of a run report: what was written, dropped and why, and one pair to look at, read from
the summary the generator saves beside its output (``GenerateResult``)."""

from __future__ import annotations

from pathlib import Path

from generator.run import GenerateResult
from judge.prompts import judge_prompt_text
from prefloop.jsonl import iter_jsonl
from prefloop.report import Report


def add_generation_section(report: Report, output: str | Path) -> GenerateResult | None:
    report.heading("Generation")
    s = GenerateResult.of(output)
    if s is None:
        report.paragraph("No generation summary yet.")
        return None
    report.key_values({"prompts": s.prompts, "pairs in the file": s.total_in_output, "written this run": s.written,
                       "already there (resumed)": s.skipped_existing, "failed": s.failed,
                       "seconds (last run)": s.elapsed_s})
    if s.dropped:
        report.table([{"dropped because": why, "pairs": n} for why, n in sorted(s.dropped.items())],
                     caption="prompts that produced no pair, and why")
    else:
        report.paragraph("No prompt was dropped.")
    reasons = s.run.get("failure_reasons") or {}
    if reasons:
        report.table([{"failed because": why, "prompts": n} for why, n in sorted(reasons.items())],
                     caption="failures (retried on the next run)")
    if Path(output).exists():
        for _, row in iter_jsonl(output):
            if "completion" in row:   # the score strategy: one answer and its label
                score = (row.get("meta") or {}).get("score")
                report.example("a labelled answer", judge_prompt_text(row["prompt"]),
                               {("desirable" if row.get("label") else "undesirable") + f" (score {score})":
                                row["completion"]})
            else:
                report.example("a generated pair", judge_prompt_text(row["prompt"]),
                               {"chosen": row.get("chosen", ""), "rejected": row.get("rejected", "")})
            break
    return s
