"""``ollama:MODEL`` through the official ``ollama.AsyncClient``, made safe to leave running overnight.

What the bare client does not do and this adds (see ../shared/reference/ollama-api.md):
- a timeout: the client's default is none, and one hung request would stall a run for hours;
- retries with backoff and jitter on connection errors, timeouts, 429/500/502/503 and errors mid-stream
  (``status_code == -1``), never on 400/404, which will not get better;
- a preflight that names the fix: server down, server older than JSON-schema ``format`` (0.5.0), model missing
  (``ollama pull MODEL``);
- ``num_ctx`` and ``keep_alive`` sent on every request (Ollama silently truncates prompts past its default
  context, and unloads a 70B model after 5 idle minutes), with a warning when a prompt may not fit;
- at most ``slots`` requests in flight (match ``OLLAMA_NUM_PARALLEL``): more would only wait in its queue, and
  past its queue size it answers 503;
- JSON-schema replies parsed and validated, else ``ReplyInvalid(raw)`` for the caller to re-ask or record.

Replies are streamed: the read timeout then bounds the silence between chunks, not the whole answer, so a long
answer from a slow 70B model is not cut off while a dead connection is still noticed.

Each request in flight gets its own single-connection ``ollama.AsyncClient`` from a ``ClientPool`` (see
``prefloop/llm/pool.py`` for why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from typing import Any

from prefloop.llm.base import ChatReply, ClientSpec, ContextCheck, GenOptions, ServerFatal, Transient, is_loopback
from prefloop.llm.pool import ClientPool
from prefloop.llm.retry import ClientStats, RawReply, RetryPolicy, send_once, with_retries

log = logging.getLogger("prefloop.llm")

MIN_VERSION = (0, 5, 0)  # JSON schema in `format` (PR #7900)
DEFAULT_HOST = "http://127.0.0.1:11434"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
PREFLIGHT_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0)  # a restarting server, not an outage
PREFLIGHT_TIMEOUT_S = 20.0  # /api/version and /api/tags answer at once on a live server, even while it is busy


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"0.12.11"`` -> ``(0, 12, 11)``; ``"0.5.0-rc1"`` -> ``(0, 5, 0)``; unparseable -> None."""
    parts = text.strip().lstrip("v").split("-")[0].split("+")[0].split(".")
    try:
        nums = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def model_key(name: str) -> str:
    """How Ollama matches names: case-insensitive, tag ``latest`` when none is given."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


# ---- the two places we reach past ollama-python's public API (tests/test_clients_ollama.py runs both) ------

def base_url(host: str) -> str:
    """The URL the ollama client will use for ``host`` (its own parser, so both agree)."""
    try:
        from ollama._client import _parse_host
    except ImportError:  # pragma: no cover - parser moved; the simple rule covers the common forms
        return host if "://" in host else f"http://{host}"
    return _parse_host(host)


async def server_version(client: Any) -> str:
    """``GET /api/version`` through the client's own httpx client: the official client has no ``version()``."""
    response = await client._client.get("/api/version")
    response.raise_for_status()
    return str(response.json().get("version", ""))


class OllamaClient:
    """An ``LLMClient`` for Ollama. ``timeout`` bounds silence on a connection (seconds), not the whole answer."""

    def __init__(self, spec: ClientSpec, *, host: str | None = None, timeout: float = 300.0,
                 connect_timeout: float = 10.0, keep_alive: str | float = "30m",
                 retry: RetryPolicy = RetryPolicy(), slots: int | None = None, stream: bool = True,
                 seed: int | None = None, unload_on_close: bool = False):
        """``keep_alive`` pins the model between requests (a 70B reload takes minutes); ``unload_on_close`` frees
        its memory when this client is done (before another big model loads)."""
        self.spec = spec
        self.host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self.url = base_url(self.host)
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.keep_alive = keep_alive
        self.retry = retry
        self.stream = stream
        self.unload_on_close = unload_on_close
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._context = ContextCheck(str(spec))
        self.pool = ClientPool(self._new_client, lambda client: client.close(), slots)

    def __repr__(self) -> str:
        return f"OllamaClient({self.spec}, url={self.url!r})"

    def _new_client(self) -> Any:
        import httpx
        import ollama

        # trust_env=False for loopback: an HTTP(S)_PROXY in the environment must not swallow 127.0.0.1 calls.
        trust_env = not is_loopback(self.url)
        client = ollama.AsyncClient(host=self.url, timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                    trust_env=trust_env, verify=self.pool.ssl_context(trust_env))
        return client

    @property
    def client(self) -> Any:
        """An ``ollama.AsyncClient`` for one-off calls (preflight); requests in flight take their own."""
        return self.pool.any()

    # ---- preflight -------------------------------------------------------------------------------------------
    async def preflight(self) -> None:
        """Server reachable, new enough for JSON-schema ``format``, model present; else ``ServerFatal`` saying
        what to run."""
        where = f"Ollama at {self.url}"
        try:
            version, _ = await with_retries(self._version, PREFLIGHT_RETRY, rng=self._rng,
                                            what=f"{where} /api/version")
        except Transient as err:
            raise ServerFatal(f"cannot reach {where} ({err}). Start it with `ollama serve`, or point the model "
                              f"setting's host / OLLAMA_HOST at the right server.") from err
        parsed = parse_version(version)
        if parsed == (0, 0, 0):
            log.warning("%s reports version 0.0.0 (a development build); assuming JSON-schema format works", where)
        elif parsed is None or parsed < MIN_VERSION:
            raise ServerFatal(f"{where} is version {version}; prefloop needs >= "
                              f"{'.'.join(map(str, MIN_VERSION))} for JSON-schema structured outputs. "
                              f"Upgrade Ollama (https://ollama.com/download).")
        try:
            listing, _ = await with_retries(self._tags, PREFLIGHT_RETRY, rng=self._rng, what=f"{where} /api/tags")
        except Transient as err:
            raise ServerFatal(f"{where} did not list its models: {err}") from err
        names = {model_key(m.model or "") for m in listing.models}
        if model_key(self.spec.model) not in names:
            have = ", ".join(sorted(names)) or "none"
            raise ServerFatal(f"model '{self.spec.model}' is not in {where} (it has: {have}). "
                              f"Run: ollama pull {self.spec.model}")

    async def _version(self) -> str:
        try:
            return await asyncio.wait_for(server_version(self.client), PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Transient(f"{self.url}: no answer to /api/version within {PREFLIGHT_TIMEOUT_S:g} s") from None
        except Exception as err:  # noqa: BLE001 - mapped to Transient/ServerFatal
            raise self._classify(err) from err

    async def _tags(self) -> Any:
        try:
            return await asyncio.wait_for(self.client.list(), PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Transient(f"{self.url}: no answer to /api/tags within {PREFLIGHT_TIMEOUT_S:g} s") from None
        except Exception as err:  # noqa: BLE001
            raise self._classify(err) from err

    # ---- chat ------------------------------------------------------------------------------------------------
    def request_options(self, options: GenOptions) -> dict[str, Any]:
        """GenOptions in Ollama's words; ``num_ctx`` always explicit."""
        out: dict[str, Any] = {"temperature": options.temperature, "num_predict": options.max_tokens,
                               "num_ctx": options.num_ctx}
        if options.seed is not None:
            out["seed"] = options.seed
        if options.top_p is not None:
            out["top_p"] = options.top_p
        if options.stop:
            out["stop"] = list(options.stop)
        return out

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        options = options or GenOptions()
        self._context.before(messages, options)
        return await send_once(lambda: self._send(messages, schema, options), schema=schema, seed=options.seed,
                               policy=self.retry, stats=self.stats, model=str(self.spec), rng=self._rng,
                               what=f"{self.spec}")

    async def _send(self, messages: list[dict[str, str]], schema: dict[str, Any] | None,
                    options: GenOptions) -> RawReply:
        request = {"model": self.spec.model, "messages": messages,
                   "options": self.request_options(options), "keep_alive": self.keep_alive,
                   "format": schema or ""}
        async with self.pool.slot() as client:
            return await self._stream(client, request, options)

    async def _stream(self, client: Any, request: dict[str, Any], options: GenOptions) -> RawReply:
        try:
            if not self.stream:
                final = await client.chat(**request, stream=False)
                text = final.message.content or ""
            else:
                pieces: list[str] = []
                final = None
                async for part in await client.chat(**request, stream=True):
                    pieces.append(part.message.content or "")
                    if part.done:
                        final = part
                if final is None:
                    raise Transient("the reply stream ended before its final chunk")
                text = "".join(pieces)
        except Transient:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is classified, none swallowed
            raise self._classify(err) from err
        prompt_tokens = final.prompt_eval_count or 0
        self._context.after(prompt_tokens, options)
        return RawReply(text=text, prompt_tokens=prompt_tokens, completion_tokens=final.eval_count or 0,
                        finish_reason=final.done_reason or "")

    def _classify(self, err: Exception) -> Exception:
        """Transient (worth a retry) or ServerFatal (fix the setup or the request), with a message that says which."""
        import httpx
        import ollama
        import pydantic

        where = f"{self.spec} at {self.url}"
        if isinstance(err, ollama.ResponseError):
            status = err.status_code
            if status == -1:
                return Transient(f"{where}: error mid-stream: {err.error}")
            if status in RETRY_STATUS:
                return Transient(f"{where}: HTTP {status}: {err.error}")
            if status == 404 and "not found" in str(err.error):
                return ServerFatal(f"{where}: {err.error}. Run: ollama pull {self.spec.model}")
            return ServerFatal(f"{where}: HTTP {status}: {err.error}")
        if isinstance(err, ConnectionError):
            return Transient(f"{where}: cannot connect (is `ollama serve` running?)")
        if isinstance(err, httpx.TimeoutException):
            return Transient(f"{where}: no reply for {self.timeout:g}s ({type(err).__name__})")
        if isinstance(err, httpx.TransportError):
            return Transient(f"{where}: connection broken: {type(err).__name__}: {err}")
        if isinstance(err, (json.JSONDecodeError, pydantic.ValidationError)):
            return Transient(f"{where}: unreadable reply line: {str(err)[:200]}")
        if isinstance(err, httpx.HTTPStatusError):
            status = err.response.status_code
            return (Transient if status in RETRY_STATUS else ServerFatal)(f"{where}: HTTP {status}")
        return ServerFatal(f"{where}: {type(err).__name__}: {err}")

    async def unload(self) -> None:
        """Ask Ollama to unload the model now (an empty chat with ``keep_alive: 0``); failures only logged."""
        try:
            await self.client.chat(model=self.spec.model, messages=[], keep_alive=0)
        except Exception as err:  # noqa: BLE001 - unloading is a courtesy, never a reason to fail a run
            log.info("%s: could not unload: %s", self.spec, err)

    async def aclose(self) -> None:
        if self.unload_on_close and self.stats.requests:
            await self.unload()
        await self.pool.aclose()
