"""``openai:MODEL@BASE_URL``: any OpenAI-compatible chat server (vLLM, llama.cpp server, LM Studio, Ollama's /v1,
hosted APIs) through plain httpx, with the same retry and JSON-validation rules as the Ollama client.

Why not the ``openai`` package: one POST and one GET are all we need, and httpx is already here.
The API key is read only from an environment variable (``OPENAI_API_KEY`` unless another name is given), kept only
in the HTTP client's headers, and never put in a record, a log line, an error or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from typing import Any

from prefloop.llm.base import (ChatReply, ClientSpec, ContextCheck, GenOptions, ModelFacts, ServerFatal, Transient,
                               is_loopback)
from prefloop.llm.pool import ClientPool
from prefloop.llm.retry import ClientStats, RawReply, RetryPolicy, send_once, with_retries
from prefloop.records import Prompt

log = logging.getLogger("prefloop.llm")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
PREFLIGHT_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0)
PREFLIGHT_TIMEOUT_S = 20.0


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is rare on these APIs and ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def token_entries(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``choices[0].logprobs.content`` as ``ChatReply.logprobs`` entries; None when the server sent none (a server
    without log-probabilities, or a model that has them off) or sent them malformed."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list) or not content:
        return None
    try:
        return [{"token": str(t["token"]), "logprob": float(t["logprob"]),
                 "top": [[str(a["token"]), float(a["logprob"])] for a in t.get("top_logprobs") or []]}
                for t in content]
    except (KeyError, TypeError, ValueError):
        return None


class OpenAIClient:
    """An ``LLMClient`` for OpenAI-compatible ``/chat/completions``. ``timeout`` bounds one whole reply."""

    def __init__(self, spec: ClientSpec, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600.0,
                 connect_timeout: float = 10.0, retry: RetryPolicy = RetryPolicy(), slots: int | None = None,
                 seed: int | None = None, strict_schema: bool = False):
        self.spec = spec
        self.base_url = (spec.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.retry = retry
        self.strict_schema = strict_schema
        self.top_logprobs = 0  # > 0: ask each chat reply's token log-probabilities, this many alternatives
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._context = ContextCheck(f"openai:{spec.model}")
        self.pool = ClientPool(self._new_client, lambda client: client.aclose(), slots)

    def __repr__(self) -> str:
        return f"OpenAIClient({self.spec.backend}:{self.spec.model}, base_url={self.base_url!r}, " \
               f"key from ${self.api_key_env})"

    def _new_client(self) -> Any:
        """An httpx client with one connection; the key goes into its headers here and nowhere else."""
        import httpx

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        trust_env = not is_loopback(self.base_url)
        client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                   limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                   timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                                   trust_env=trust_env, verify=self.pool.ssl_context(trust_env))
        return client

    @property
    def http(self) -> Any:
        """An httpx client for one-off calls."""
        return self.pool.any()

    async def preflight(self) -> None:
        """Server reachable, key accepted, model served; else ``ServerFatal`` saying what to fix."""
        if not os.environ.get(self.api_key_env) and not is_loopback(self.base_url):
            raise ServerFatal(f"{self.base_url} needs an API key: set the environment variable {self.api_key_env} "
                              f"(keys are never read from settings files)")
        try:
            listing, _ = await with_retries(self._models, PREFLIGHT_RETRY, rng=self._rng,
                                            what=f"{self.base_url}/models")
        except Transient as err:
            raise ServerFatal(f"cannot reach the OpenAI-compatible server at {self.base_url}: {err}") from err
        if listing is None:
            log.warning("%s has no /models listing; cannot check that it serves '%s'", self.base_url,
                        self.spec.model)
            return
        ids = [str(m.get("id", "")) for m in listing.get("data", []) if isinstance(m, dict)]
        if self.spec.model in ids:
            return
        if len(ids) == 1:  # single-model servers (llama.cpp) answer whatever name is asked
            log.warning("%s serves only '%s', not '%s'; using it", self.base_url, ids[0], self.spec.model)
            return
        raise ServerFatal(f"model '{self.spec.model}' is not served by {self.base_url} (it serves: "
                          f"{', '.join(ids[:20]) or 'nothing'})")

    async def _models(self) -> dict[str, Any] | None:
        try:
            response = await asyncio.wait_for(self._request("GET", "/models"), PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Transient(f"{self.base_url}/models: no answer within {PREFLIGHT_TIMEOUT_S:g} s") from None
        if response.status_code == 404:
            return None
        self._raise_for_status(response)
        return response.json()

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        options = options or GenOptions()
        self._context.before(messages, options)
        return await send_once(lambda: self._send(messages, schema, options), schema=schema, seed=options.seed,
                               policy=self.retry, stats=self.stats, model=f"openai:{self.spec.model}",
                               rng=self._rng, what=f"openai:{self.spec.model}")

    async def complete(self, prompt: Prompt, options: GenOptions | None = None) -> str:
        """A text prompt exactly as written (``/completions``: no chat template, as a trained model saw it); a
        message list through the server's chat template."""
        if not isinstance(prompt, str):
            return (await self.chat(prompt, options=options)).text
        options = options or GenOptions()
        body = self.request_body(None, None, options)
        body["prompt"] = prompt

        async def send() -> RawReply:
            response = await self._request("POST", "/completions", json=body)
            self._raise_for_status(response)
            try:
                choice = response.json()["choices"][0]
                usage = response.json().get("usage") or {}
                return RawReply(text=choice.get("text") or "", prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                completion_tokens=int(usage.get("completion_tokens") or 0),
                                finish_reason=str(choice.get("finish_reason") or ""))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
                raise Transient(f"{self.base_url}: unreadable completion: {response.text[:200]!r}") from err

        reply = await send_once(send, schema=None, seed=options.seed, policy=self.retry, stats=self.stats,
                                model=f"openai:{self.spec.model}", rng=self._rng, what=f"openai:{self.spec.model}")
        return reply.text

    async def facts(self) -> ModelFacts:
        """What the API says of the model: nothing of its weights or chat template (both stay the server's)."""
        return ModelFacts(runtime="openai-compatible")

    def request_body(self, messages: list[dict[str, str]] | None, schema: dict[str, Any] | None,
                     options: GenOptions) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.spec.model, "temperature": options.temperature,
                                "max_tokens": options.max_tokens}
        if messages is not None:
            body["messages"] = messages
        if options.seed is not None:
            body["seed"] = options.seed
        if options.top_p is not None:
            body["top_p"] = options.top_p
        if options.stop:
            body["stop"] = list(options.stop)
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": schema, "strict": self.strict_schema}}
        return body

    async def _send(self, messages: list[dict[str, str]], schema: dict[str, Any] | None,
                    options: GenOptions) -> RawReply:
        body = self.request_body(messages, schema, options)
        if self.top_logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        response = await self._request("POST", "/chat/completions", json=body)
        self._raise_for_status(response)
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise Transient(f"{self.base_url}: unreadable completion: {response.text[:200]!r}") from err
        usage = body.get("usage") or {}
        return RawReply(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0),
                        finish_reason=str(choice.get("finish_reason") or ""),
                        logprobs=token_entries(choice) if self.top_logprobs else None)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One HTTP call; transport failures become ``Transient`` (the message names no header)."""
        import httpx

        async with self.pool.slot() as client:
            try:
                return await client.request(method, path, **kwargs)
            except httpx.TimeoutException as err:
                raise Transient(f"{self.base_url}{path}: no reply within {self.timeout:g}s "
                                f"({type(err).__name__})") from None
            except httpx.TransportError as err:
                raise Transient(f"{self.base_url}{path}: connection failed: {type(err).__name__}") from None

    def _raise_for_status(self, response: Any) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            detail = response.json().get("error", {})
            message = detail.get("message", "") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError, json.JSONDecodeError):
            message = response.text[:200]
        where = f"{self.base_url}: HTTP {status}: {message}"
        if status in RETRY_STATUS:
            raise Transient(where, retry_after_seconds(response.headers.get("retry-after")))
        if status in (401, 403):
            raise ServerFatal(f"{where} (check the key in ${self.api_key_env})")
        raise ServerFatal(where)

    async def aclose(self) -> None:
        await self.pool.aclose()
