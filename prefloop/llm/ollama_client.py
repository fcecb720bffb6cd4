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
- several hosts for one model (``prefloop.llm.hosts``): each request goes to the host with the fewest requests in
  flight that has a free slot; a transient failure on one host is retried at once on another and the failing
  host cools down; preflight checks that every host serves the same digest of the model;
- JSON-schema replies parsed and validated, else ``ReplyInvalid(raw)`` for the caller to re-ask or record;
- token log-probabilities on request (``top_logprobs`` > 0: Ollama >= 0.12.11 answers ``logprobs`` per token with
  that many alternatives; an older server ignores the fields and the reply has none, ``ChatReply.logprobs`` None);
- ``complete(prompt)``: a text prompt answered exactly as written (``/api/generate`` with ``raw``, no chat
  template), the way a local model answers the prompt it was trained on.

Replies are streamed: the read timeout then bounds the silence between chunks, not the whole answer, so a long
answer from a slow 70B model is not cut off while a dead connection is still noticed.

Each request in flight gets its own single-connection ``ollama.AsyncClient`` from its host's ``ClientPool`` (see
``prefloop/llm/pool.py`` for why).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from typing import Any, Awaitable, Callable, Sequence

from prefloop.llm.base import (ChatReply, ClientSpec, ContextCheck, GenOptions, ModelFacts, ServerFatal, Transient,
                               is_loopback)
from prefloop.llm.hosts import Host, HostRouter, HostState, parse_hosts
from prefloop.llm.pool import ClientPool
from prefloop.llm.retry import ClientStats, RawReply, RetryPolicy, send_once, with_retries
from prefloop.records import Prompt

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


_TAKES_LOGPROBS: bool | None = None


def client_takes_logprobs() -> bool:
    """Whether the installed ollama client passes ``logprobs`` on (0.6.1 and later); an older one would refuse the
    keyword, so its replies simply carry none (said once)."""
    global _TAKES_LOGPROBS
    if _TAKES_LOGPROBS is None:
        import inspect

        import ollama

        _TAKES_LOGPROBS = "logprobs" in inspect.signature(ollama.AsyncClient.chat).parameters
        if not _TAKES_LOGPROBS:
            log.warning("the installed ollama client (%s) cannot ask for token log-probabilities; "
                        "pip install -U 'ollama>=0.6.1' to get log-odds verdicts", getattr(ollama, "__version__", "?"))
    return _TAKES_LOGPROBS


def token_entry(item: Any) -> dict[str, Any]:
    """One ``logprobs`` item of the ollama client (``Logprob``: token, logprob, top_logprobs) as a plain dict,
    the shape every client hands back (``ChatReply.logprobs``)."""
    top = [[t.token, float(t.logprob)] for t in (item.top_logprobs or [])]
    return {"token": item.token, "logprob": float(item.logprob), "top": top}


def classify(err: Exception, where: str, *, model: str = "", timeout: float | None = None) -> Exception:
    """An error of the ``ollama`` client (or of httpx under it) as ``Transient`` (worth a retry) or ``ServerFatal``
    (fix the setup or the request), with a message that says which; ``where`` starts it."""
    import httpx
    import ollama
    import pydantic

    if isinstance(err, ollama.ResponseError):
        status = err.status_code
        if status == -1:
            return Transient(f"{where}: error mid-stream: {err.error}")
        if status in RETRY_STATUS:
            return Transient(f"{where}: HTTP {status}: {err.error}")
        if status == 404 and "not found" in str(err.error) and model:
            return ServerFatal(f"{where}: {err.error}. Run: ollama pull {model}")
        return ServerFatal(f"{where}: HTTP {status}: {err.error}")
    if isinstance(err, ConnectionError):
        return Transient(f"{where}: cannot connect (is `ollama serve` running?)")
    if isinstance(err, httpx.TimeoutException):
        waited = f" for {timeout:g}s" if timeout else ""
        return Transient(f"{where}: no reply{waited} ({type(err).__name__})")
    if isinstance(err, httpx.TransportError):
        return Transient(f"{where}: connection broken: {type(err).__name__}: {err}")
    if isinstance(err, (json.JSONDecodeError, pydantic.ValidationError)):
        return Transient(f"{where}: unreadable reply line: {str(err)[:200]}")
    if isinstance(err, httpx.HTTPStatusError):
        status = err.response.status_code
        return (Transient if status in RETRY_STATUS else ServerFatal)(f"{where}: HTTP {status}")
    return ServerFatal(f"{where}: {type(err).__name__}: {err}")


class OllamaClient:
    """An ``LLMClient`` for Ollama. ``timeout`` bounds silence on a connection (seconds), not the whole answer."""

    def __init__(self, spec: ClientSpec, *, host: str | None = None, hosts: str | Sequence[str] | None = None,
                 timeout: float = 300.0, connect_timeout: float = 10.0, keep_alive: str | float = "30m",
                 retry: RetryPolicy = RetryPolicy(), slots: int | None = None, stream: bool = True,
                 seed: int | None = None, unload_on_close: bool = False):
        """Where the model is: the spec's own ``@URL[,URL...]``, else ``hosts`` (``URL`` or ``URL=SLOTS`` items),
        else ``host``, else ``OLLAMA_HOST``, else the local default. ``slots`` is each host's limit unless the
        host says its own. ``keep_alive`` pins the model between requests (a 70B reload takes minutes);
        ``unload_on_close`` frees its memory when this client is done (before another big model loads)."""
        self.spec = spec
        listed = parse_hosts(spec.base_url or hosts or "") or [
            Host(host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)]
        self.host = listed[0].url
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.keep_alive = keep_alive
        self.retry = retry
        self.stream = stream
        self.unload_on_close = unload_on_close
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        self._context = ContextCheck(self.name)
        states = []
        for h in listed:
            url = base_url(h.url)
            pool = ClientPool(lambda url=url: self._new_client(url), lambda client: client.close())
            states.append(HostState(url, h.slots or slots, pool))
        self.router = HostRouter(states)
        self.url = states[0].url
        self.top_logprobs = 0              # > 0: ask each chat reply's token log-probabilities, this many alternatives
        self.digests: dict[str, str] = {}  # host URL -> the model's digest there (after preflight)
        self.quantization = ""             # the model's quantization level (after preflight)

    @property
    def name(self) -> str:
        """The model without its hosts (for messages and records)."""
        return f"ollama:{self.spec.model}"

    @property
    def hosts(self) -> list[HostState]:
        return self.router.hosts

    @property
    def capacity(self) -> int | None:
        """Requests all hosts run at once: the sum of their slots (None when one has no limit)."""
        return self.router.capacity

    @property
    def pool(self) -> ClientPool:
        """The first host's connections (with one host: all of them)."""
        return self.hosts[0].pool

    def __repr__(self) -> str:
        urls = ",".join(h.url for h in self.hosts)
        return f"OllamaClient({self.name}, url={urls!r})"

    def _new_client(self, url: str) -> Any:
        import httpx
        import ollama

        # trust_env=False for loopback: an HTTP(S)_PROXY in the environment must not swallow 127.0.0.1 calls.
        trust_env = not is_loopback(url)
        pool = next((h.pool for h in self.hosts if h.url == url), self.pool)
        client = ollama.AsyncClient(host=url, timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                    trust_env=trust_env, verify=pool.ssl_context(trust_env))
        return client

    @property
    def client(self) -> Any:
        """An ``ollama.AsyncClient`` for one-off calls on the first host (preflight); requests take their own."""
        return self.pool.any()

    # ---- preflight -------------------------------------------------------------------------------------------
    async def preflight(self) -> None:
        """Every host reachable, new enough for JSON-schema ``format``, and serving the model with one digest;
        else ``ServerFatal`` saying what to run."""
        digests = {}
        for host in self.hosts:
            found = await self._preflight_host(host)
            digests[host.url] = found.digest or ""
            self.quantization = (found.details.quantization_level if found.details else "") or ""
        if len(set(digests.values())) > 1:
            facts = ", ".join(f"{url}: {d[:12] or '?'}" for url, d in digests.items())
            raise ServerFatal(f"the hosts serve different builds of {self.name} ({facts}): their answers would "
                              f"differ by host. Pull or create the same tag on every host (ollama pull "
                              f"{self.spec.model}), or list only the hosts that match")
        self.digests = digests

    async def _preflight_host(self, host: HostState) -> Any:
        where = f"Ollama at {host.url}"
        client = host.pool.any()
        try:
            version, _ = await with_retries(lambda: self._call(server_version(client), host), PREFLIGHT_RETRY,
                                            rng=self._rng, what=f"{where} /api/version")
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
            listing, _ = await with_retries(lambda: self._call(client.list(), host), PREFLIGHT_RETRY, rng=self._rng,
                                            what=f"{where} /api/tags")
        except Transient as err:
            raise ServerFatal(f"{where} did not list its models: {err}") from err
        found = {model_key(m.model or ""): m for m in listing.models}
        if model_key(self.spec.model) not in found:
            have = ", ".join(sorted(found)) or "none"
            raise ServerFatal(f"model '{self.spec.model}' is not in {where} (it has: {have}). "
                              f"Run: ollama pull {self.spec.model}")
        return found[model_key(self.spec.model)]

    async def _call(self, call: Awaitable[Any], host: HostState) -> Any:
        try:
            return await asyncio.wait_for(call, PREFLIGHT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Transient(f"{host.url}: no answer within {PREFLIGHT_TIMEOUT_S:g} s") from None
        except Exception as err:  # noqa: BLE001 - mapped to Transient/ServerFatal
            raise self._classify(err, host.url) from err

    async def facts(self) -> ModelFacts:
        """The served model as the first host has it: digest, quantization, and its chat template's digest."""
        if not self.digests:
            await self.preflight()
        show, _ = await with_retries(lambda: self._call(self.client.show(self.spec.model), self.hosts[0]),
                                     PREFLIGHT_RETRY, rng=self._rng, what=f"{self.name} /api/show")
        template = show.template or ""
        return ModelFacts(runtime="ollama", digest=self.digests.get(self.url, ""),
                          quantization=self.quantization,
                          template=hashlib.sha256(template.encode()).hexdigest()[:16] if template else "")

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
        request = {"model": self.spec.model, "messages": messages, "options": self.request_options(options),
                   "keep_alive": self.keep_alive, "format": schema or ""}
        if self.top_logprobs and client_takes_logprobs():
            request.update(logprobs=True, top_logprobs=self.top_logprobs)
        return await send_once(lambda: self._routed(request, options, "chat"), schema=schema, seed=options.seed,
                               policy=self.retry, stats=self.stats, model=self.name, rng=self._rng, what=self.name)

    async def complete(self, prompt: Prompt, options: GenOptions | None = None) -> str:
        """The answer to one prompt as a trained model sees it: a text prompt exactly as written (``raw``: no
        chat template, no system prompt), a message list through the model's chat template."""
        if not isinstance(prompt, str):
            return (await self.chat(prompt, options=options)).text
        options = options or GenOptions()
        self._context.before([{"content": prompt}], options)
        request = {"model": self.spec.model, "prompt": prompt, "raw": True, "options": self.request_options(options),
                   "keep_alive": self.keep_alive}
        reply = await send_once(lambda: self._routed(request, options, "generate"), schema=None, seed=options.seed,
                                policy=self.retry, stats=self.stats, model=self.name, rng=self._rng, what=self.name)
        return reply.text

    async def _routed(self, request: dict[str, Any], options: GenOptions, api: str) -> RawReply:
        """One request on the host the router picks; a transient failure there is tried at once on another host
        (each host at most once) before it goes back to ``with_retries`` and its backoff."""
        tried: list[HostState] = []
        while True:
            async with self.router.slot(avoid=tried) as (host, client):
                try:
                    reply = await self._stream(client, request, options, api, host.url)
                except Transient as err:
                    self.router.failed(host)
                    tried.append(host)
                    if not self.router.alternative(tried):
                        raise
                    self.stats.requests += 1
                    self.stats.retries += 1
                    log.info("%s: %s failed (%s); trying another host", self.name, host.url, err)
                    continue
            self.router.succeeded(host)
            return reply

    async def _stream(self, client: Any, request: dict[str, Any], options: GenOptions, api: str = "chat",
                      url: str = "") -> RawReply:
        call: Callable[..., Any] = client.chat if api == "chat" else client.generate

        def text_of(part: Any) -> str:
            return (part.message.content if api == "chat" else part.response) or ""

        tokens: list[Any] = []
        try:
            if not self.stream:
                final = await call(**request, stream=False)
                text = text_of(final)
                tokens.extend(getattr(final, "logprobs", None) or [])
            else:
                pieces: list[str] = []
                final = None
                async for part in await call(**request, stream=True):
                    pieces.append(text_of(part))
                    tokens.extend(getattr(part, "logprobs", None) or [])  # each chunk carries its own tokens
                    if part.done:
                        final = part
                if final is None:
                    raise Transient("the reply stream ended before its final chunk")
                text = "".join(pieces)
        except Transient:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is classified, none swallowed
            raise self._classify(err, url) from err
        prompt_tokens = final.prompt_eval_count or 0
        self._context.after(prompt_tokens, options)
        return RawReply(text=text, prompt_tokens=prompt_tokens, completion_tokens=final.eval_count or 0,
                        finish_reason=final.done_reason or "",
                        logprobs=[token_entry(t) for t in tokens] if request.get("logprobs") and tokens else None)

    def _classify(self, err: Exception, url: str = "") -> Exception:
        return classify(err, f"{self.name} at {url or self.url}", model=self.spec.model, timeout=self.timeout)

    async def unload(self) -> None:
        """Ask every host to unload the model now (an empty chat with ``keep_alive: 0``); failures only logged."""
        for host in self.hosts:
            try:
                await host.pool.any().chat(model=self.spec.model, messages=[], keep_alive=0)
            except Exception as err:  # noqa: BLE001 - unloading is a courtesy, never a reason to fail a run
                log.info("%s at %s: could not unload: %s", self.name, host.url, err)

    async def aclose(self) -> None:
        if self.unload_on_close and self.stats.requests:
            await self.unload()
        await self.router.aclose()
