"""LLM clients shared by the generator and the judge: one interface, chosen by a spec string.

``ollama:MODEL`` (default), ``openai:MODEL@BASE_URL`` and ``local:MODEL`` (transformers in-process; ``local:``
alone is the embedded SmolLM2). Every client has async ``preflight()``, ``chat(messages, schema=, options=)`` ->
``ChatReply`` and ``aclose()``, plus ``stats`` (requests, retries, invalid replies, tokens) for progress bars.
Keyword arguments of ``make_client`` go to the client's constructor (each documents its own): the served
clients take ``timeout``, ``connect_timeout``, ``retry`` (a ``RetryPolicy``), ``slots`` (requests in flight) and
``seed``; ``LocalClient`` takes ``device``, ``dtype``, ``batch_size``, ``threads`` and also has
``generate_batch(prompts, options)`` and async ``complete(prompt, options)``.

Attempts per request, at most: ``RetryPolicy.attempts`` (8 by default, about a minute of backoff) for transport
errors, inside the client. Above that, the caller that parses replies may ask again (``judge.core``: ``attempts``
per order) and the runner may run a failed job again (``max_attempts``); ``prefloop.runner`` states the worst case
for one job.
"""

from prefloop.llm.base import (ChatReply, ClientSpec, GenOptions, LLMClient, LLMError, ReplyInvalid, ServerFatal,
                               Transient, parse_spec)
from prefloop.llm.retry import ClientStats, RetryPolicy

__all__ = ["ChatReply", "ClientSpec", "ClientStats", "GenOptions", "LLMClient", "LLMError", "ReplyInvalid",
           "RetryPolicy", "ServerFatal", "Transient", "parse_spec", "make_client"]


def make_client(spec: "str | ClientSpec", **kwargs):  # noqa: ANN201 - returns one of the three clients
    """Build the client a spec names. Imports lazily so ``local:`` does not load torch for Ollama users. A person
    or an in-process judge (``human``, ``python:``, ``reward:``) is no chat model: asking for one is a ValueError."""
    parsed = parse_spec(spec)
    if not parsed.chat:
        raise ValueError(f"{parsed} is a {parsed.kind} judge, not a model that writes answers; use ollama:MODEL, "
                         "openai:MODEL@URL or local:MODEL here")
    if parsed.backend == "ollama":
        from prefloop.llm.ollama_client import OllamaClient
        return OllamaClient(parsed, **kwargs)
    if parsed.backend == "openai":
        from prefloop.llm.openai_client import OpenAIClient
        return OpenAIClient(parsed, **kwargs)
    from prefloop.llm.local_client import LocalClient
    return LocalClient(parsed, **kwargs)
