"""The one interface every LLM client implements, the spec strings that pick one, and the error classes.

Errors are split by what the caller should do: ``Transient`` (retry with backoff: connection refused, timeout,
429/500/502/503, an error mid-stream), ``ServerFatal`` (do not retry: 400, 404, a missing model, an old server),
``ReplyInvalid`` (the model answered but not in the asked-for JSON shape, after bounded retries; carries the raw
text so it can be recorded as a failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

BACKENDS = ("ollama", "openai", "local")


class LLMError(RuntimeError):
    """Base class for client errors."""


class Transient(LLMError):
    """Worth retrying: the same request may succeed later."""


class ServerFatal(LLMError):
    """Not worth retrying: the request or the setup is wrong (the message says what to do)."""


class ReplyInvalid(LLMError):
    """The reply did not parse or validate against the schema, after the allowed retries."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class ClientSpec:
    """``backend:model[@base_url]``, parsed."""

    backend: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_spec(spec: str) -> ClientSpec:
    """Parse a client spec. A bare name means Ollama (``llama3.1:70b`` == ``ollama:llama3.1:70b``).

    >>> parse_spec("openai:gpt-4o-mini@http://127.0.0.1:8000/v1")
    ClientSpec(backend='openai', model='gpt-4o-mini', base_url='http://127.0.0.1:8000/v1')
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model spec: use ollama:MODEL, openai:MODEL@BASE_URL or local:MODEL")
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in BACKENDS:
        backend, rest = "ollama", spec
    base_url = None
    if backend == "openai":
        rest, at, base_url = rest.partition("@")
        base_url = base_url or None
        if not at:
            base_url = None
    if backend == "local" and not rest:
        rest = "smollm2"  # `local:` alone is the embedded SmolLM2-135M-Instruct
    if not rest:
        raise ValueError(f"model spec '{spec}' names no model")
    return ClientSpec(backend=backend, model=rest, base_url=base_url)


@dataclass(frozen=True)
class GenOptions:
    """Sampling settings, the same words for every backend. ``temperature`` 0 means greedy."""

    temperature: float = 0.0
    seed: int | None = 123
    max_tokens: int = 512
    top_p: float | None = None
    num_ctx: int = 4096          # Ollama's context window; set explicitly (its default silently truncates)
    stop: tuple[str, ...] = ()


@dataclass
class ChatReply:
    """A reply: the text, the parsed JSON when a schema was asked for, token usage and where it came from."""

    text: str
    data: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class LLMClient(Protocol):
    """What the generator and the judge need from any model."""

    spec: ClientSpec

    async def preflight(self) -> None:
        """Fail fast, before any work, with what to do: server down, server too old, model missing."""

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        """One chat turn. With ``schema`` the reply is JSON validated against it (``ChatReply.data``)."""

    async def aclose(self) -> None:
        """Release connections or models."""
