"""Verdicts read from a local judge's token probabilities instead of its generated text.

Small local models (SmolLM2-135M) rarely write the verdict JSON when asked: they answer the question, or echo
the prompt, so every judgment ends up unparsed. AlpacaEval's default judge does not generate a verdict either: it
reads the log-probabilities of the answer identifiers. We do the same for ``local:`` judges: after the judge
prompt, the assistant turn is started with ``{"winner": "`` and each way of finishing it (``A"``, ``B"``,
``tie"``) is scored by its summed token log-probability; the most likely one is the verdict. It always parses,
costs one forward pass of the prompt (each candidate's few tokens run on a copy of its key/value cache) instead of
a generation, and is still judged in both orders, so a judge that only likes position A ends up with inconsistent
ties, not with a preference. A 0-100 score (``judge.scoring``: the rank strategy, the preflight, the judge stage's
scores) is read the same way, after ``{"score": ``, as the expectation over 0, 10, ..., 100 under the judge's own
probabilities of writing each (as G-Eval weights its scores), so it always parses and ties are rare.

Served judges (``ollama:``, ``openai:``) get the same log-odds without an extra request (``ServedLogprobJudge``):
the usual schema-constrained verdict is asked with ``top_logprobs`` alternatives per token, and the alternatives
at the token that starts the ``winner`` value give log P(A) − log P(B) (``verdict_logodds``). A server or model
that returns no log-probabilities (Ollama before 0.12.11) gives plain verdicts, which the validation then decides
by both orders, and says why.

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
import logging
import re
from typing import Any

from prefloop.llm.base import ChatReply, GenOptions, ServerFatal
from prefloop.models import common_prefix_length, kv_cache_name

PREFIX = '{"winner": "'
CANDIDATES = {"A": 'A"', "B": 'B"', "tie": 'tie"'}
SCORE_PREFIX = '{"score": '
SCORE_VALUES = tuple(range(0, 101, 10))  # the 0-100 scores a local judge's score is read over (judge.scoring)
TOP_LOGPROBS = 10  # alternatives asked per token of a served judge's reply (Ollama allows 0-20)
WINNER_VALUE = re.compile(r'"winner"\s*:\s*"')  # what precedes the deciding token in the verdict JSON
NO_LOGPROBS = ("the server returned no token log-probabilities (Ollama before 0.12.11, or a server or model "
               "without them)")
NO_CANDIDATES = "A or B was not among the top alternatives at the verdict token"

log = logging.getLogger("prefloop.judge")


class _LogoddsJudge:
    """A client whose verdicts carry log-odds: cached apart from its plain verdicts (``+logodds`` in its spec);
    preflight and close are the client's."""

    def __init__(self, client: Any):
        self.client = client
        self.spec = f"{client.spec}+logodds"

    async def preflight(self) -> None:
        await self.client.preflight()

    async def aclose(self) -> None:
        await self.client.aclose()


class LogprobJudge(_LogoddsJudge):
    """A ``LocalClient`` judged by token probabilities (see the module docstring)."""

    def __init__(self, client: Any):
        super().__init__(client)
        self._lock: asyncio.Lock | None = None
        self._tokens: dict[tuple, tuple[list[int], dict[Any, list[int]]]] = {}  # continuations' token ids

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if schema is not None and "score" in schema.get("properties", {}):  # score mode (judge.scoring)
            async with self._lock:
                value, probs = await asyncio.to_thread(self.score, messages)
            data = {"score": value, "probs": {str(v): p for v, p in probs.items()}}
            return ChatReply(text=json.dumps(data), data=data, model=str(self.client.spec))
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
        return self.continuations(messages, PREFIX, CANDIDATES)

    def score(self, messages: list[dict[str, str]]) -> tuple[float, dict[int, float]]:
        """The 0-100 score as the expectation over ``SCORE_VALUES`` under the judge's own probabilities of writing
        each one after ``SCORE_PREFIX`` (normalised over those values), and those probabilities."""
        logps = self.continuations(messages, SCORE_PREFIX, {v: f"{v}}}" for v in SCORE_VALUES})
        top = max(logps.values())
        weights = {v: math.exp(lp - top) for v, lp in logps.items()}
        total = sum(weights.values())
        probs = {v: w / total for v, w in weights.items()}
        return sum(v * p for v, p in probs.items()), probs

    def continuations(self, messages: list[dict[str, str]], prefix: str, candidates: dict[Any, str]
                      ) -> dict[Any, float]:
        """Summed log-probability of each ``prefix + candidate`` continuation of the judge prompt's assistant turn.

        The prompt (and the prefix's tokens every candidate shares) runs through the model once; each candidate's
        few tokens then run on a copy of that key/value cache, so scoring K candidates costs one prompt forward,
        not K. A tokenizer may merge the prefix's last characters with a candidate's first (``" 8"``): the tokens
        from where a candidate's tokens part from the prefix's own are the ones scored."""
        import copy

        import torch

        model, tokenizer = self.client.load()
        context = self.client.encode(messages)
        key = (prefix, tuple(candidates.items()))
        if key not in self._tokens:  # the same few strings on every call: tokenised once
            self._tokens[key] = (tokenizer(prefix, add_special_tokens=False)["input_ids"],
                                 {name: tokenizer(prefix + text, add_special_tokens=False)["input_ids"]
                                  for name, text in candidates.items()})
        base, fulls = self._tokens[key]
        shared = min(common_prefix_length(base, full) for full in fulls.values())
        head = context + base[:shared]
        kv_arg = kv_cache_name(model)
        with torch.no_grad():
            out = model(torch.tensor([head], device=model.device), use_cache=True)
            kv = getattr(out, kv_arg)
            last = out.logits[0, -1:].float()
            scores = {}
            for name, full in fulls.items():
                tail = full[shared:]
                first = common_prefix_length(base, full) - shared  # the first scored token in ``tail``
                logits = model(torch.tensor([tail], device=model.device), use_cache=True,
                               **{kv_arg: copy.deepcopy(kv)}).logits[0].float()
                logp = torch.log_softmax(torch.cat([last, logits[:-1]]), dim=-1)  # row i predicts tail[i]
                target = torch.tensor(tail, device=logp.device)
                scores[name] = float(logp[first:].gather(1, target[first:, None]).sum())
        return scores


def scoring_client(judge: str, client: Any, verdict: str = "auto") -> Any:
    """Who gives a 0-100 score (``judge.scoring``): a ``local:`` judge reads it from its token probabilities
    (``LogprobJudge.score``: one prompt forward, where a generated score took up to ``attempts`` generations of
    ``judge_max_tokens`` and still often did not parse), unless ``verdict = "generate"``; any other judge as given."""
    from prefloop.llm.base import parse_spec

    if client is None or verdict == "generate" or isinstance(client, LogprobJudge) \
            or parse_spec(judge).backend != "local":
        return client
    return LogprobJudge(client)


def _label(token: str) -> str | None:
    """Which verdict an alternative at the deciding token starts: ``"A"``, ``"B"``, ``"tie"`` or None.

    The deciding token may carry the opening quote or a space (``"A``, `` B``); ``tie`` may be cut into pieces
    (``t``, ``ti``); ``Assistant`` is not ``A``.
    """
    text = token.lstrip(' \t\n:"').upper()
    if text and "TIE".startswith(text[:3]) and text[0] == "T":
        return "tie"
    if text[:1] in ("A", "B") and not text[1:2].isalpha():
        return text[0]
    return None


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def verdict_logodds(tokens: list[dict[str, Any]] | None) -> tuple[float | None, str]:
    """log P(A) − log P(B) at the token that starts the reply's ``winner`` value, and why not when None.

    ``tokens`` are ``ChatReply.logprobs`` entries (``{"token", "logprob", "top": [[token, logprob], ...]}``). The
    text is rebuilt from the tokens; the deciding token is the one holding the first character of the last
    ``"winner": "`` value; every alternative there is read as A, B or tie (``_label``) and each verdict's
    probability summed over its spellings. A verdict absent from the alternatives has no log-odds (its
    probability is only bounded, not known)."""
    if not tokens:
        return None, NO_LOGPROBS
    text = "".join(t["token"] for t in tokens)
    found = list(WINNER_VALUE.finditer(text))
    if not found:
        return None, "no winner field in the reply's tokens"
    at, start = found[-1].end(), 0
    for t in tokens:
        end = start + len(t["token"])
        if end > at:
            break
        start = end
    else:
        return None, "the reply ends before its verdict"
    by_label: dict[str, list[float]] = {}
    for alt, lp in t.get("top") or [[t["token"], t["logprob"]]]:
        label = _label(str(alt))
        if label is not None and math.isfinite(lp):
            by_label.setdefault(label, []).append(float(lp))
    if "A" not in by_label or "B" not in by_label:
        return None, NO_CANDIDATES
    return _logsumexp(by_label["A"]) - _logsumexp(by_label["B"]), ""


class ServedLogprobJudge(_LogoddsJudge):
    """A served judge (``OllamaClient``, ``OpenAIClient``) whose verdicts carry log-odds read from the token
    log-probabilities of the same reply (see the module docstring); every other attribute is the client's.

    ``with_logodds`` / ``without`` count the replies with and without them; ``why`` keeps the last reason."""

    def __init__(self, client: Any, top_logprobs: int = TOP_LOGPROBS):
        super().__init__(client)
        client.top_logprobs = top_logprobs
        self.with_logodds = 0
        self.without = 0
        self.why = ""

    def __getattr__(self, name: str) -> Any:  # stats, capacity, facts, complete, hosts: the client's own
        return getattr(self.__dict__["client"], name)

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        try:
            reply = await self.client.chat(messages, schema=schema, options=options)
        except ServerFatal as err:
            if not self.client.top_logprobs or "logprob" not in str(err).lower():
                raise
            # a server or model that refuses log-probabilities (a 400 naming them): ask as before, from now on
            self.client.top_logprobs = 0
            self.why = f"the server refused log-probabilities ({err})"
            log.warning("%s: %s; its verdicts fall back to both orders", self.spec, self.why)
            reply = await self.client.chat(messages, schema=schema, options=options)
        if not (isinstance(reply.data, dict) and "winner" in reply.data):
            return reply  # not a verdict (a score), or not parsed: nothing to add
        logodds, why = verdict_logodds(reply.logprobs)
        if logodds is None:
            self.without += 1
            if not self.client.top_logprobs:  # refused before: already said why
                return reply
            if why != self.why:
                log.warning("%s: no log-odds for a verdict (%s); its verdicts fall back to both orders",
                            self.spec, why)
            self.why = why
            return reply
        self.with_logodds += 1
        reply.data = {**reply.data, "logodds": logodds}
        return reply
