"""Retries with exponential backoff and jitter, shared by every client.

Why jitter: after a server restart or a burst of 503s, a generator with 16 requests in flight would otherwise
retry all 16 at the same instant and hit the same wall again. Each client maps its own exceptions to ``Transient``
(retry) or ``ServerFatal`` (stop) and hands the call to ``with_retries``; a ``Transient`` may carry a
``retry_after`` (seconds, from a 429's Retry-After header) that overrides the computed delay.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from prefloop.llm.base import ChatReply, ReplyInvalid, Transient
from prefloop.llm.schema import SchemaError, parse_reply

T = TypeVar("T")
log = logging.getLogger("prefloop.llm")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; delays ``base * 2**(n-1)`` capped at ``max_delay``, each jittered down by up to
    ``jitter`` of itself (0.5 = "equal jitter": between half and all of the exponential delay).

    The defaults ride out about a minute of outage per request (0.5+1+2+4+8+16+30 s at most), enough for an
    Ollama restart; longer outages become recorded failures that a rerun retries.
    """

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling * (1.0 - self.jitter * rng.random())


@dataclass
class ClientStats:
    """Running counts for one client, read by progress bars (retries, invalid replies) and run summaries."""

    requests: int = 0
    retries: int = 0
    invalid_replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_error: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, rng: random.Random | None = None,
                       stats: ClientStats | None = None, what: str = "request") -> tuple[T, int]:
    """Await ``call()`` until it succeeds or a non-``Transient`` error escapes; ``(result, attempts used)``.

    The last ``Transient`` is re-raised once ``policy.attempts`` are spent, its message saying how many tries.
    """
    rng = rng or random.Random()
    attempt = 1
    while True:
        try:
            return await call(), attempt
        except Transient as err:
            if stats is not None:
                stats.last_error = str(err)
                kind = type(err.__cause__).__name__ if err.__cause__ else "Transient"
                stats.errors_by_kind[kind] = stats.errors_by_kind.get(kind, 0) + 1
            if attempt >= policy.attempts:
                raise Transient(f"{what} failed after {attempt} attempts: {err}") from err
            retry_after = getattr(err, "retry_after", None)
            delay = float(retry_after) if retry_after is not None else policy.delay(attempt, rng)
            delay = min(delay, policy.max_delay)
            if stats is not None:
                stats.retries += 1
            log.info("%s: retry %d/%d in %.2fs after: %s", what, attempt, policy.attempts - 1, delay, err)
            await asyncio.sleep(delay)
            attempt += 1


@dataclass
class RawReply:
    """What one successful request returned, before schema checks."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


async def ask(send: Callable[[int | None], Awaitable[RawReply]], *, schema: dict | None, seed: int | None,
              policy: RetryPolicy, invalid_retries: int, stats: ClientStats, model: str,
              rng: random.Random | None = None, what: str = "chat") -> ChatReply:
    """One chat turn with both retry budgets: transport retries inside, invalid-JSON re-asks outside.

    ``send(seed)`` does one request. An invalid reply is asked again with the next seed (the same seed at
    temperature 0 would repeat the same broken answer); after ``invalid_retries`` re-asks, ``ReplyInvalid`` with
    the last raw text, so the caller can record the failure with what the model said.
    """
    attempts = 0
    for reask in range(invalid_retries + 1):
        this_seed = None if seed is None else seed + reask
        raw, used = await with_retries(lambda: send(this_seed), policy, rng=rng, stats=stats, what=what)
        attempts += used
        stats.requests += used
        stats.prompt_tokens += raw.prompt_tokens
        stats.completion_tokens += raw.completion_tokens
        extra = {"finish_reason": raw.finish_reason, "seed": this_seed}
        if schema is None:
            return ChatReply(text=raw.text, prompt_tokens=raw.prompt_tokens, completion_tokens=raw.completion_tokens,
                             model=model, attempts=attempts, extra=extra)
        try:
            data = parse_reply(raw.text, schema)
        except SchemaError as err:
            stats.invalid_replies += 1
            problem = str(err) + (" (cut off: the reply hit max_tokens)" if raw.finish_reason == "length" else "")
            log.info("%s: invalid reply (%d/%d): %s", what, reask + 1, invalid_retries + 1, problem)
            if reask == invalid_retries:
                raise ReplyInvalid(f"{what}: invalid JSON reply after {reask + 1} tries: {problem}",
                                   raw=raw.text) from err
            continue
        return ChatReply(text=raw.text, data=data, prompt_tokens=raw.prompt_tokens,
                         completion_tokens=raw.completion_tokens, model=model, attempts=attempts, extra=extra)
    raise AssertionError("unreachable")
