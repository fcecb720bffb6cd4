"""LLM clients shared by the generator and the judge: one interface, chosen by a spec string.

``ollama:MODEL`` (default), ``openai:MODEL@BASE_URL`` and ``local:MODEL`` (transformers in-process; ``local:``
alone is the embedded SmolLM2). Every client has async ``preflight()``, ``chat(messages, schema=, options=)`` ->
``ChatReply`` and ``aclose()``, plus ``stats`` (requests, retries, invalid replies, tokens) for progress bars.
Keyword arguments of ``make_client`` go to the client: ``OllamaClient(host, timeout, keep_alive, retry,
invalid_retries, stream, unload_on_close)``, ``OpenAIClient(api_key_env, timeout, retry, invalid_retries)``,
``LocalClient(device, dtype, batch_size, batch_wait_ms, invalid_retries, threads)``; ``LocalClient`` also has
``generate_batch(prompts, options)`` and async ``complete(prompt, options)``.
"""

from prefloop.llm.base import (ChatReply, ClientSpec, GenOptions, LLMClient, LLMError, ReplyInvalid, ServerFatal,
                               Transient, parse_spec)
from prefloop.llm.retry import ClientStats, RetryPolicy

__all__ = ["ChatReply", "ClientSpec", "ClientStats", "GenOptions", "LLMClient", "LLMError", "ReplyInvalid",
           "RetryPolicy", "ServerFatal", "Transient", "parse_spec", "make_client"]


def make_client(spec: str, **kwargs):  # noqa: ANN201 - returns one of the three clients
    """Build the client a spec string names. Imports lazily so ``local:`` does not load torch for Ollama users."""
    parsed = parse_spec(spec)
    if parsed.backend == "ollama":
        from prefloop.llm.ollama_client import OllamaClient
        return OllamaClient(parsed, **kwargs)
    if parsed.backend == "openai":
        from prefloop.llm.openai_client import OpenAIClient
        return OpenAIClient(parsed, **kwargs)
    from prefloop.llm.local_client import LocalClient
    return LocalClient(parsed, **kwargs)
