"""LLM clients shared by the generator and the judge: one interface, chosen by a spec string.

``ollama:MODEL`` (default), ``openai:MODEL@BASE_URL`` and ``local:MODEL`` (transformers in-process).
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
