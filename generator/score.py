"""``score``: sample K answers per prompt, have the judge score each 0-100, and keep every answer with a label:
desirable when its score reaches ``threshold``, undesirable below it. No pairs: this is KTO's data
(``{prompt, completion, label}``, what ``prefloop train --objective kto`` reads).

Each answer is its own job (id from the prompt, the settings and the answer's index), so the runner appends it
the moment it is scored, and a rerun resumes answer by answer: nothing lost, nothing written twice. An answer the
judge gave no score is dropped (its reply kept in the drop record), so is an empty one; every score and the judge's
reply stay in ``meta``, so the set can be relabelled at another threshold without asking any model again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefloop.records import PromptRecord, stable_id
from prefloop.runner import Drop, Job

if TYPE_CHECKING:
    from generator.config import GenerateConfig
    from generator.run import Context


def jobs(cfg: GenerateConfig, records: list[PromptRecord]) -> list[Job]:
    """K jobs per prompt: answer ``i`` comes from candidate model ``i mod len(models)`` with seed ``seed + i``."""
    return [Job(id=stable_id("scored", rec.prompt, rec.known_good, cfg.identity(), i), data=(rec, i))
            for rec in records for i in range(cfg.k)]


async def make_record(ctx: Context, data: tuple[PromptRecord, int]) -> dict[str, Any] | Drop:
    cfg = ctx.cfg
    rec, i = data
    specs = cfg.candidate_models
    spec, seed = specs[i % len(specs)], cfg.seed + i
    text = (await ctx.answer(spec, rec, temperature=cfg.rank_temperature, seed=seed)).strip()
    if not text:
        return Drop("empty answer", {"model": spec, "seed": seed})
    score = await ctx.score(rec, text)
    judged = {k: v for k, v in score.to_json().items() if k != "value"}
    if score.value is None:
        return Drop("no score from the judge", {"model": spec, "seed": seed, "text": text, "judge": judged})
    meta = {"score": score.value, "threshold": cfg.threshold, "judge": cfg.judge_model, "judged": judged,
            "model": spec, "candidate": i, "seed": seed}
    return ctx.labelled(rec, text, score.value >= cfg.threshold, meta)
