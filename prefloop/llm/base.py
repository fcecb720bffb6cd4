"""The one interface every LLM client implements, the spec strings that pick one, and the error classes.

Errors are split by what the caller should do (as httpx splits ``TransportError`` from ``HTTPStatusError``)::

    LLMError
    ├── Transient     retry later: connection refused, timeout, 429/500/502/503, an error mid-stream
    │                 (the client already retried it ``RetryPolicy.attempts`` times; ``retry_after`` from a 429)
    ├── ServerFatal   do not retry: 400, 404, a missing model, an old server; the message says what to fix
    └── ReplyInvalid  the model answered, but not in the asked-for JSON shape; ``raw`` keeps what it said, so
                      the caller that parses replies may ask again (``judge.core``) or record the failure

Who owns what: the client owns transport retries and how many requests a server gets at once (its ``slots``);
the code that parses a reply owns re-asking; the durable runner (``prefloop.runner``) owns job retries and how
many jobs are in flight.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from prefloop.errors import RunFailed

log = logging.getLogger("prefloop.llm")

BACKENDS = ("ollama", "openai", "local")          # chat models: make_client builds them
SERVED = ("ollama", "openai")                      # asked over HTTP
KINDS = (*BACKENDS, "human", "python", "reward")   # every judge kind (see ClientSpec)


class LLMError(RunFailed, RuntimeError):
    """Base class for client errors. ``requests``: how many requests the call made before giving up."""

    requests: int = 1


class Transient(LLMError):
    """Worth retrying: the same request may succeed later (``retry_after``: seconds the server asked for)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ServerFatal(LLMError):
    """Not worth retrying: the request or the setup is wrong (the message says what to do)."""


class ServerUnreachable(ServerFatal):
    """The server was down or hung before anything was sent: start it or give the right host (exit 2)."""

    exit_code = 2


class ReplyInvalid(LLMError):
    """The reply did not parse or validate against the asked-for schema; ``raw`` is what the model said."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class ClientSpec:
    """A model or judge spec, parsed once into its kind (``backend``) and what it names (``model``).

    ============  ==========================  =====================================================
    kind          written                     ``model`` holds
    ============  ==========================  =====================================================
    ``ollama``    ``NAME[@HOSTS]`` or bare    the served model (``base_url``: hosts, comma-separated)
    ``openai``    ``openai:NAME@BASE_URL``    the served model
    ``local``     ``local:NAME``              a folder, a ``.gguf`` or ``smollm2`` (in-process)
    ``human``     ``human`` / ``human:NAME``  the rater's name (``""``: the login name)
    ``python``    ``python:MODULE:FUNCTION``  ``MODULE:FUNCTION``, a judge you write (``judge.python_judge``)
    ``reward``    ``reward:PATH``             a sequence-classification folder (``judge.reward``)
    ============  ==========================  =====================================================

    Code asks the spec what it is (``served``, ``person``, ``chat``) instead of comparing strings, so a new kind
    is added here and every caller that filters by kind follows.
    """

    backend: str
    model: str
    base_url: str | None = None

    @property
    def kind(self) -> str:
        return self.backend

    @property
    def served(self) -> bool:
        """Asked over HTTP (a server must be up and serve the model)."""
        return self.backend in SERVED

    @property
    def person(self) -> bool:
        """A person on the labelling screen, not a model."""
        return self.backend == "human"

    @property
    def chat(self) -> bool:
        """A model that answers chat turns (``make_client`` builds it): can write answers, and judge by reply."""
        return self.backend in BACKENDS

    def __str__(self) -> str:
        if self.backend == "human":
            return "human" + (f":{self.model}" if self.model else "")
        return f"{self.backend}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_spec(spec: str | ClientSpec) -> ClientSpec:
    """Parse a model or judge spec. A bare name means Ollama (``llama3.1:70b`` == ``ollama:llama3.1:70b``);
    ``human`` alone is the person, not a model of that name.

    >>> parse_spec("openai:gpt-4o-mini@http://127.0.0.1:8000/v1")
    ClientSpec(backend='openai', model='gpt-4o-mini', base_url='http://127.0.0.1:8000/v1')
    >>> parse_spec("ollama:llama3.1:70b@http://a:11434,http://b:11434").base_url
    'http://a:11434,http://b:11434'
    >>> parse_spec("human:ana").person, parse_spec("python:my_judges:prefer_short").model
    (True, 'my_judges:prefer_short')
    """
    if isinstance(spec, ClientSpec):
        return spec
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model spec: use ollama:MODEL, openai:MODEL@BASE_URL, local:MODEL, human, "
                         "python:MODULE:FUNCTION or reward:PATH")
    if spec == "human":
        return ClientSpec(backend="human", model="")
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in KINDS:
        backend, rest = "ollama", spec
    rest = rest.strip()
    base_url = None
    if backend in SERVED:  # Ollama names have no "@"; what follows one is where the model is
        rest, at, base_url = rest.partition("@")
        base_url = base_url or None
        if not at:
            base_url = None
    if backend == "local" and not rest:
        rest = "smollm2"  # `local:` alone is the embedded SmolLM2-135M-Instruct
    if backend == "python":
        module, _, function = rest.rpartition(":")
        if not module or not function.isidentifier():
            raise ValueError(f"judge spec '{spec}': write python:MODULE:FUNCTION (e.g. python:my_judges:score, "
                             "with my_judges.py importable from the current folder)")
    if not rest and backend != "human":
        raise ValueError(f"model spec '{spec}' names no model")
    return ClientSpec(backend=backend, model=rest, base_url=base_url)


def spec_identity(spec: str) -> str:
    """A spec as the content it names: an Ollama model is the same model on whichever hosts serve it (preflight
    checks they serve the same digest), so ``ollama:M@http://a,http://b`` is ``ollama:M``. Other specs are
    returned as written, so ids made from them before hosts existed stay the same."""
    parsed = parse_spec(spec)
    if parsed.backend == "ollama" and parsed.base_url:
        return spec.strip()[: spec.strip().rindex("@" + parsed.base_url)]
    return spec


@dataclass(frozen=True)
class ModelFacts:
    """What serves a model's answers, recorded beside them: the runtime (``transformers``, ``ollama``,
    ``openai-compatible``), the served weights' digest and quantization (Ollama's), and the digest of the chat
    template it applies to message prompts (``""`` when unknown)."""

    runtime: str
    digest: str = ""
    quantization: str = ""
    template: str = ""


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
    extra: dict[str, Any] = field(default_factory=dict)  # finish_reason, seed; logprobs when the client asked

    @property
    def logprobs(self) -> list[dict[str, Any]] | None:
        """Per generated token ``{"token", "logprob", "top": [[token, logprob], ...]}`` when the client asked for
        log-probabilities (``top_logprobs`` > 0) and the server returned them; None otherwise."""
        return self.extra.get("logprobs")


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


def is_loopback(url: str) -> bool:
    """A URL on this machine (localhost, 127.0.0.0/8, ::1): no proxy, no API key needed."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough count (4 characters a token, plus a few per message for the template)."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


class ContextCheck:
    """Warns once per client when a request may not fit the context window: servers drop the start of a prompt
    that does not fit without saying so (Ollama), or fail it (OpenAI-compatible servers)."""

    def __init__(self, what: str):
        self.what = what
        self.warned = False

    def before(self, messages: list[dict[str, Any]], options: GenOptions) -> None:
        need = estimate_tokens(messages) + options.max_tokens
        if need > options.num_ctx:
            self._warn(f"a prompt may exceed num_ctx (~{need - options.max_tokens} prompt tokens + "
                       f"{options.max_tokens} max_tokens > {options.num_ctx}); raise num_ctx")

    def after(self, prompt_tokens: int, options: GenOptions) -> None:
        if prompt_tokens >= options.num_ctx:
            self._warn(f"a prompt filled the whole context ({prompt_tokens} tokens >= num_ctx {options.num_ctx}); "
                       "the server truncated it. Raise num_ctx")

    def _warn(self, text: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("%s: %s.", self.what, text)
