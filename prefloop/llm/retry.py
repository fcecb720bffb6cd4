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

from prefloop.llm.base import ChatReply, LLMError, ReplyInvalid, Transient
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
                final = Transient(f"{what} failed after {attempt} attempts: {err}", err.retry_after)
                final.requests = attempt
                raise final from err
            delay = float(err.retry_after) if err.retry_after is not None else policy.delay(attempt, rng)
            delay = min(delay, policy.max_delay)
            if stats is not None:
                stats.retries += 1
            log.info("%s: retry %d/%d in %.2fs after: %s", what, attempt, policy.attempts - 1, delay, err)
            await asyncio.sleep(delay)
            attempt += 1
        except LLMError as err:  # not worth retrying (ServerFatal): say what the call cost
            err.requests = attempt
            raise


@dataclass
class RawReply:
    """What one successful request returned, before any schema check."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    logprobs: list[dict] | None = None  # per generated token, when asked: {"token", "logprob", "top": [[t, lp]]}


async def send_once(send: Callable[[], Awaitable[RawReply]], *, schema: dict | None, seed: int | None,
                    policy: RetryPolicy, stats: ClientStats, model: str, rng: random.Random | None = None,
                    what: str = "chat") -> ChatReply:
    """One chat turn: the request with its transport retries, then the schema check when a schema was asked for.

    An invalid reply is not asked again here: ``ReplyInvalid`` carries the raw text to the caller that parses
    replies, which decides whether another ask is worth it (``judge.core`` re-asks with a new seed).
    """
    raw, used = await with_retries(send, policy, rng=rng, stats=stats, what=what)
    stats.requests += used
    stats.prompt_tokens += raw.prompt_tokens
    stats.completion_tokens += raw.completion_tokens
    extra = {"finish_reason": raw.finish_reason, "seed": seed}
    if raw.logprobs is not None:
        extra["logprobs"] = raw.logprobs
    data = None
    if schema is not None:
        try:
            data = parse_reply(raw.text, schema)
        except SchemaError as err:
            stats.invalid_replies += 1
            cut = " (cut off: the reply hit max_tokens)" if raw.finish_reason == "length" else ""
            raise ReplyInvalid(f"{what}: invalid JSON reply: {err}{cut}", raw=raw.text) from err
    return ChatReply(text=raw.text, data=data, prompt_tokens=raw.prompt_tokens,
                     completion_tokens=raw.completion_tokens, model=model, attempts=used, extra=extra)
