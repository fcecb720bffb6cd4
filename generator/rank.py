"""``rank``: sample K answers, have the judge score each, pair the best with the worst.

Candidates come round-robin from one or several models (e.g. the SFT model through ``local:`` and the big model),
each with its own seed. Scores come from ``judge.scoring.score_answer`` (the same scoring the judge stage uses).
Following the Self-Rewarding and Argilla lessons: equal scores are dropped, so are pairs closer than
``min_margin``; every candidate and score is kept in ``meta`` (or in the drop record), so a pair set can be
re-binarised later without asking any model again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from prefloop.records import PromptRecord
from prefloop.runner import Drop
from prefloop.text import same_text

if TYPE_CHECKING:
    from generator.run import Context


async def make_pair(ctx: Context, rec: PromptRecord) -> dict[str, Any] | Drop:
    cfg = ctx.cfg
    specs = cfg.candidate_models
    plan = [(specs[i % len(specs)], cfg.seed + i) for i in range(cfg.k)]
    texts = await asyncio.gather(*(ctx.answer(spec, rec, temperature=cfg.rank_temperature, seed=seed)
                                   for spec, seed in plan))
    candidates: list[dict[str, Any]] = []
    for (spec, seed), text in zip(plan, texts):
        text = text.strip()
        if text and not any(same_text(text, c["text"]) for c in candidates):
            candidates.append({"model": spec, "seed": seed, "text": text})
    if len(candidates) < 2:
        return Drop("fewer than 2 distinct candidates", {"candidates": candidates})
    scored = await asyncio.gather(*(ctx.score(rec, c["text"]) for c in candidates))
    for c, score in zip(candidates, scored):
        c["score"] = score.value
        c["judge"] = {k: v for k, v in score.to_json().items() if k != "value"}
    valid = [c for c in candidates if c["score"] is not None]
    if len(valid) < 2:
        return Drop("fewer than 2 scored candidates", {"candidates": candidates})
    best = max(valid, key=lambda c: c["score"])
    worst = min(valid, key=lambda c: c["score"])
    margin = best["score"] - worst["score"]
    if margin == 0:
        return Drop("tie (all scores equal)", {"candidates": candidates})
    if margin < cfg.min_margin:
        return Drop(f"margin under {cfg.min_margin:g}", {"candidates": candidates, "margin": margin})
    meta = {"candidates": candidates, "chosen_score": best["score"], "rejected_score": worst["score"],
            "margin": margin, "chosen_model": best["model"], "rejected_model": worst["model"],
            "judge": cfg.judge_model, "model": cfg.candidate_models}
    return ctx.pair(rec, best["text"], worst["text"], meta)
