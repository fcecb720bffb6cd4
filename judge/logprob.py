"""Verdicts read from a local judge's token probabilities instead of its generated text.

Small local models (SmolLM2-135M) rarely write the verdict JSON when asked: they answer the question, or echo
the prompt, so every judgment ends up unparsed. AlpacaEval's default judge does not generate a verdict either: it
reads the log-probabilities of the answer identifiers. We do the same for ``local:`` judges: after the judge
prompt, the assistant turn is started with ``{"winner": "`` and each way of finishing it (``A"``, ``B"``,
``tie"``) is scored by its summed token log-probability; the most likely one is the verdict. It always parses,
costs three forward passes instead of a generation, and is still judged in both orders, so a judge that only
likes position A ends up with inconsistent ties, not with a preference.

``LogprobJudge`` wraps a ``LocalClient`` and speaks the client interface (``chat`` returns the verdict JSON), so
the cache, both orders, retries and the runner work unchanged. The reply also carries ``logodds``, log P(A) −
log P(B) (the answer shown first against the second), from which ``judge.stats.position_and_content`` takes the
judge's position bias out. Its spec is ``<spec>+logodds`` so its judgments are cached apart from generated ones
(and from those of earlier versions, which carried no log-odds).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from prefloop.llm.base import ChatReply, GenOptions
from prefloop.models import common_prefix_length

PREFIX = '{"winner": "'
CANDIDATES = {"A": 'A"', "B": 'B"', "tie": 'tie"'}


class LogprobJudge:
    """A ``LocalClient`` judged by token probabilities (see the module docstring)."""

    def __init__(self, client: Any):
        self.client = client
        self.spec = f"{client.spec}+logodds"
        self._lock: asyncio.Lock | None = None

    async def preflight(self) -> None:
        await self.client.preflight()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one forward at a time: two would only fight over the cores
            scores = await asyncio.to_thread(self.scores, messages)
        winner = max(scores, key=lambda k: scores[k])
        top = max(scores.values())
        total = sum(math.exp(v - top) for v in scores.values())
        probs = {k: math.exp(v - top) / total for k, v in scores.items()}
        reason = "token probabilities " + ", ".join(f"{k} {p:.2f}" for k, p in probs.items())
        data = {"reason": reason, "winner": winner, "probs": probs, "logodds": scores["A"] - scores["B"]}
        return ChatReply(text=json.dumps(data), data=data, model=str(self.client.spec))

    def scores(self, messages: list[dict[str, str]]) -> dict[str, float]:
        """Summed log-probability of each verdict continuation after the prompt and ``PREFIX``."""
        import torch

        model, tokenizer = self.client.load()
        context = self.client.encode(messages)
        base = tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
        out = {}
        for name, text in CANDIDATES.items():
            full = tokenizer(PREFIX + text, add_special_tokens=False)["input_ids"]
            start = len(context) + common_prefix_length(base, full)
            ids = context + full
            with torch.no_grad():
                logits = model(torch.tensor([ids], device=model.device)).logits[0].float()
            logp = torch.log_softmax(logits[start - 1: len(ids) - 1], dim=-1)
            target = torch.tensor(ids[start:], device=logp.device)
            out[name] = float(logp.gather(1, target[:, None]).sum())
        return out
