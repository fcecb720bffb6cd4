"""``contrast``: chosen from the strong model, rejected from the SFT model itself (on-policy rejected answers).

The SFT model's own greedy answer is what DPO should move away from; the strong model's answer to the same
prompt is what it should move toward. The SFT model sees the prompt exactly as it was trained on it (see
``Context.answer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefloop.records import PromptRecord
from prefloop.runner import Drop
from prefloop.text import same_text

if TYPE_CHECKING:
    from generator.run import Context


async def make_pair(ctx: Context, rec: PromptRecord) -> dict[str, Any] | Drop:
    cfg = ctx.cfg
    chosen = (await ctx.answer(cfg.model, rec, temperature=cfg.temperature)).strip()
    rejected = (await ctx.answer(cfg.sft_model, rec, temperature=cfg.temperature)).strip()
    if not chosen:
        return Drop("empty answer from the strong model", {"rejected": rejected})
    if not rejected:
        return Drop("empty answer from the SFT model", {"chosen": chosen})
    if same_text(chosen, rejected):
        return Drop("chosen identical to rejected", {"text": chosen})
    return ctx.pair(rec, chosen, rejected, {"chosen_model": cfg.model, "rejected_model": cfg.sft_model,
                                            "model": cfg.model})
