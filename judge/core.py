"""One judge call: cache lookup, bounded re-asks of unparseable replies, cache write of a usable one.

Shared by pairwise and score mode, and the only place a reply is asked again because it did not parse: the
clients send each request once (with their transport retries) and hand back ``ReplyInvalid`` with the raw text;
here our own parser gets a go at it, and when that fails too the judge is asked again with a new seed and a
little temperature. Transport errors (``Transient`` after the client's retries, ``ServerFatal``) are not ours to
hide: they propagate, nothing is cached, and the caller's runner records the failure so a rerun asks again. An
answer that never parses is returned as ``value=None`` with the last raw reply, so it is counted and shown, never
dropped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from judge.cache import JudgeCache
from prefloop.llm.base import GenOptions, ReplyInvalid

DEFAULT_OPTIONS = GenOptions(temperature=0.0, seed=123, max_tokens=512)
RETRY_TEMPERATURE = 0.3  # a greedy judge repeats the same bad reply; a retry samples a little


@dataclass
class Asked:
    """What one judge call produced: the parsed value (None if it never parsed), the raw reply, and how."""

    value: Any
    raw: str
    attempts: int
    cached: bool


def judge_name(client: Any) -> str:
    """The judge's spec string, the first part of every cache key."""
    spec = getattr(client, "spec", None)
    return str(spec) if spec is not None else type(client).__name__


def options_key(options: GenOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def retry_options(options: GenOptions, attempt: int) -> GenOptions:
    """Options for attempt ``attempt`` (1-based): the first as asked, later ones with a new seed and a little
    temperature so a deterministic judge does not repeat the same unparseable reply."""
    if attempt == 1:
        return options
    seed = (options.seed if options.seed is not None else 0) + attempt - 1
    return dataclasses.replace(options, seed=seed, temperature=max(options.temperature, RETRY_TEMPERATURE))


async def ask_parsed(client: Any, messages: list[dict[str, str]], *, parse: Callable[[Any, str], Any],
              schema: dict[str, Any] | None, options: GenOptions, attempts: int, cache: JudgeCache | None,
              key: str) -> Asked:
    """Ask ``client`` until ``parse(data, text)`` returns a value (at most ``attempts`` calls), using the cache.

    ``parse`` gets the client's parsed JSON (or None) and the raw text and returns the value or None.
    """
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return Asked(value=hit["value"], raw=hit.get("raw", ""), attempts=0, cached=True)
    raw = ""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            reply = await client.chat(messages, schema=schema, options=retry_options(options, attempt))
            data, raw = reply.data, reply.text
        except ReplyInvalid as exc:  # the model answered, but not in the asked-for shape: our parser may cope
            data, raw = None, exc.raw
        value = parse(data, raw)
        if value is not None:
            if cache is not None:
                cache.put(key, {"value": value, "raw": raw})
            return Asked(value=value, raw=raw, attempts=attempt, cached=False)
    return Asked(value=None, raw=raw, attempts=max(1, attempts), cached=False)
