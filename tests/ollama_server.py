"""An Ollama-protocol test server: a real HTTP server on 127.0.0.1 that the real ``ollama`` client talks to.

Why a real server and not a mocked transport: the faults an overnight run meets (a dropped connection, a hang, an
error line after some chunks, a 503 when the queue is full) live in the HTTP layer, so only real sockets exercise
the client's timeouts, retries and stream parsing the way a real Ollama does. Behaviour follows
``../shared/reference/ollama-api.md`` (status codes, exact error strings, NDJSON shapes).

Why asyncio and a hand-written HTTP/1.1 loop rather than ``http.server``: benchmarks measure clients against this
server's capacity, so the server must cost little per request. One event loop in a background thread (keep-alive,
chunked streaming) serves several thousand requests a second where a thread per connection managed a few hundred.
For benchmarks run it in its own process: ``python tests/ollama_server.py --port P --num-parallel N --latency L``.

    server = OllamaServer(models=["llama3.1:70b"], num_parallel=4, latency=0.05).start()
    server.reply = lambda messages, format, options: "Hello"     # scripted replies
    server.fail("status", status=503, times=2)                     # the next two /api/chat calls get 503
    ... use server.url ...
    server.count("/api/chat"); server.bodies("/api/chat")          # what the client sent
    server.stop()

Fault kinds (``server.fail(kind, endpoint="/api/chat", times=1, ...)``; ``times=-1`` = every request):

- ``status``: answer ``status`` (503, 500, 429, 400, ...) with ``{"error": message}`` before any work.
- ``latency``: ``seconds`` extra latency while holding a slot.
- ``error_mid_stream``: after ``after_chunks`` chunks, a final ``{"error": message}`` line (status stays 200);
  without streaming, a 500 like the real server.
- ``hang``: accept the request and never answer (until ``seconds`` pass or the server stops), then close.
- ``drop``: close the socket without any response.
- ``malformed_json``: the content is cut-off JSON. ``schema_violation``: valid JSON that breaks the schema.
- ``garbage_line``: a line that is not JSON in the NDJSON stream.
- ``missing_model``: 404 ``model "<name>" not found, try pulling it first`` (the model vanished).

Server-wide settings are plain attributes: ``version`` (say ``"0.4.0"`` to test the old-server check),
``load_latency`` (extra seconds while a model is not loaded; ``keep_alive`` decides how long it stays),
``latency`` (fixed seconds per generation, held inside a slot), ``num_parallel`` and ``max_queue`` (FIFO queue;
past ``num_parallel + max_queue`` pending requests the answer is the 503 ``server busy``), ``chunk_words`` (words
per streamed chunk), ``reply`` (a callable ``(messages, format, options) -> str``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Callable

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_MESSAGES = {400: "bad request", 429: "rate limit exceeded", 500: "llama runner process has terminated: "
                    "exit status 2", 502: "bad gateway", 503: "model is overloaded"}
GENERATION_PATHS = ("/api/chat", "/api/generate", "/v1/chat/completions")
FAULT_KINDS = ("status", "latency", "error_mid_stream", "hang", "drop", "malformed_json", "schema_violation",
               "garbage_line", "missing_model")

Reply = Callable[[list[dict[str, Any]], Any, dict[str, Any]], str]


def normalize_model(name: str) -> str:
    """Ollama matches names case-insensitively and the tag defaults to ``latest``."""
    name = name.strip().lower()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def now_rfc3339(delta: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def example_for_schema(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value that satisfies the (simple) JSON schema: what a grammar-constrained model would return."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_for_schema(schema[key][0], rng)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_for_schema(sub, rng) for name, sub in props.items()}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        n = min(n, schema.get("maxItems", n))
        return [example_for_schema(schema.get("items", {}), rng) for _ in range(n)]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", lo + 100)
        value = rng.randint(int(lo), int(hi)) if kind == "integer" else round(rng.uniform(lo, hi), 2)
        return value
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    words = ["clear", "polite", "short", "answer", "kind", "helpful", "brief", "exact"]
    text = " ".join(rng.choice(words) for _ in range(3))
    return text[: schema.get("maxLength", len(text))] or "x" * schema.get("minLength", 1)


def default_reply(messages: list[dict[str, Any]], format: Any, options: dict[str, Any]) -> str:
    """Deterministic in (messages, format, seed): the same request gives the same reply, another seed another."""
    key = json.dumps([messages, format, options.get("seed")], sort_keys=True, default=str)
    rng = random.Random(_digest(key))
    if isinstance(format, dict):
        return json.dumps(example_for_schema(format, rng))
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    topic = " ".join(str(last).split()[:6])
    text = f"Reply {rng.randrange(10**6):06d} to: {topic}. It is a short, plain and helpful answer."
    return json.dumps({"response": text}) if format == "json" else text


PAIRWISE_ANSWER = re.compile(r"\[The Start of Assistant ([AB])'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]",
                             re.S)


def pairwise_answers(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The answers shown in positions A and B of a rendered pairwise judge prompt ('' when one is absent).

    Scripted judges in the tests and benchmarks decide from these, so one parser follows the shipped template.
    """
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    found = {m.group(1): m.group(2) for m in PAIRWISE_ANSWER.finditer(text)}
    return found.get("A", ""), found.get("B", "")


SCORED_ANSWER = re.compile(r"score the model response `(.*)` on a scale from 0 to 100", re.DOTALL)


def scored_answer(messages: list[dict[str, Any]]) -> str | None:
    """The answer a rendered score-mode prompt asks about (None for any other prompt), so scripted judges can
    give scores too."""
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    match = SCORED_ANSWER.search(text)
    return match.group(1) if match else None


@dataclass
class Fault:
    """One injected fault; ``times`` requests on ``endpoint`` (``"*"`` = any path) get it, -1 = forever."""

    kind: str
    endpoint: str = "/api/chat"
    times: int = 1
    status: int = 500
    message: str = ""
    seconds: float = 30.0
    after_chunks: int = 1
    fired: int = 0


@dataclass
class LogEntry:
    """One request as the server saw it: for asserting call counts, retries and what the client sent."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    status: int = 0
    fault: str | None = None
    started: float = field(default_factory=time.perf_counter)

class SlotGate:
    """``slots`` generations run at once; the rest wait in FIFO order; past ``slots + max_queue`` pending: busy.

    Lives on the server's event loop (no locks needed there).
    """

    def __init__(self, slots: int, max_queue: int):
        self.slots, self.max_queue = slots, max_queue
        self._free = slots
        self._waiters: deque[asyncio.Future] = deque()
        self.pending = 0
        self.running = 0
        self.peak_running = 0

    async def enter(self) -> bool:
        """Wait for a slot in arrival order. False when the queue is full (the caller answers 503)."""
        if self.pending >= self.slots + self.max_queue:
            return False
        self.pending += 1
        if self._free > 0 and not self._waiters:
            self._free -= 1
            self._started()
            return True
        ticket = asyncio.get_running_loop().create_future()
        self._waiters.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self.leave()  # the slot was handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(ticket)
                self.pending -= 1
            raise
        return True

    def _started(self) -> None:
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)

    def leave(self) -> None:
        self.pending -= 1
        self.running -= 1
        while self._waiters:
            ticket = self._waiters.popleft()
            if not ticket.done():
                ticket.set_result(None)  # hand the slot straight to the oldest waiter
                self._started()
                return
        self._free += 1


class OllamaServer:
    """The test double. Construct, set attributes, ``start()``, use ``url``; ``stop()`` when done."""

    def __init__(self, models: list[str] | tuple[str, ...] = ("llama3.1:70b", "llama3.2:1b", "judge:latest"), *,
                 version: str = "0.12.11", num_parallel: int = 4, max_queue: int = 512, latency: float = 0.0,
                 chunk_words: int = 4, reply: Reply | None = None, port: int = 0, num_ctx_default: int = 4096):
        self.models: dict[str, dict[str, Any]] = {}
        for name in models:
            self.add_model(name)
        self.version = version
        self.num_parallel, self.max_queue = num_parallel, max_queue
        self.latency = latency
        self.chunk_words = chunk_words
        self.reply: Reply = reply or default_reply
        self.num_ctx_default = num_ctx_default
        self.load_latency = 0.0  # extra seconds when a model is not loaded (first use, or after keep_alive ran out)
        self.registry: set[str] | None = None  # names /api/pull can fetch; None = any
        self.api_key: str | None = None  # when set, /v1/* wants "Authorization: Bearer <key>" (hosted-API style)
        self.faults: list[Fault] = []
        self.log: list[LogEntry] = []
        self._port = port
        self._lock = threading.Lock()
        self._gates: dict[str, SlotGate] = {}
        self._loaded: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._conns: set[asyncio.Task] = set()

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "OllamaServer":
        """Listen on 127.0.0.1 (a free port, or the one given / used before) and serve from a background thread."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as err:  # noqa: BLE001 - reported to start()'s caller
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._gates = {}
        self._thread = threading.Thread(target=serve, name="ollama-test-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:  # asyncio.start_server, with a reader that says "gone"
            return asyncio.StreamReaderProtocol(_Reader(limit=1 << 20, loop=loop), self._connection, loop=loop)

        self._server = await loop.create_server(protocol, "127.0.0.1", self._port, backlog=1024,
                                                reuse_address=True)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._stopping.set()  # hung and queued requests end now
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    def stop(self) -> None:
        """Stop serving; hung and queued requests end at once. ``start()`` again reuses the same port."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> "OllamaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # ---- configuration ---------------------------------------------------------------------------------------
    def add_model(self, name: str) -> None:
        full = normalize_model(name)
        self.models[full] = {"name": full, "model": full, "modified_at": now_rfc3339(), "size": 1_000_000 +
                             len(full), "digest": _digest(full),
                             "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                         "families": ["llama"], "parameter_size": "8.0B",
                                         "quantization_level": "Q4_K_M"}}

    def remove_model(self, name: str) -> None:
        self.models.pop(normalize_model(name), None)

    def fail(self, kind: str, endpoint: str = "/api/chat", times: int = 1, **kwargs: Any) -> Fault:
        """Inject a fault for the next ``times`` requests on ``endpoint`` (``"*"`` = any path; -1 = forever)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        fault = Fault(kind=kind, endpoint=endpoint, times=times, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint in ("*", path) and fault.times != 0:
                    fault.times -= 1 if fault.times > 0 else 0
                    fault.fired += 1
                    return fault
        return None

    def gate(self, model: str) -> SlotGate:
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = SlotGate(self.num_parallel, self.max_queue)
        return gate

    @property
    def peak_running(self) -> int:
        """The most generations that ran at once (for checking that clients respect the slot count)."""
        return max((g.peak_running for g in list(self._gates.values())), default=0)

    # ---- request log -----------------------------------------------------------------------------------------
    def requests(self, path: str | None = None) -> list[LogEntry]:
        with self._lock:
            return [e for e in self.log if path is None or e.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self.requests(path))

    def bodies(self, path: str | None = None) -> list[Any]:
        return [e.body for e in self.requests(path)]

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def _record(self, entry: LogEntry) -> None:
        with self._lock:
            self.log.append(entry)

    # ---- HTTP/1.1 connection loop ----------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = (lines[0].split(" ") + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    length = int(headers.get("content-length") or 0)
                    body = await reader.readexactly(length) if length else b""
                exchange = _Exchange(self, reader, writer, method, target, headers)
                keep = await exchange.handle(body)
                await writer.drain()
                wants_close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                if not keep or wants_close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()


class _Reader(asyncio.StreamReader):
    """A StreamReader that also sets ``gone`` when the client hangs up, so waiting work can be cancelled."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gone = asyncio.Event()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.gone.set()

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        self.gone.set()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _tokens(text: str) -> list[str]:
    """Words with their trailing space: the server's stand-in for model tokens (num_predict counts these)."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


class _Exchange:
    """One request and its response on a connection. ``handle`` returns whether the connection stays open."""

    def __init__(self, owner: OllamaServer, reader: _Reader, writer: asyncio.StreamWriter, method: str,
                 target: str, headers: dict[str, str]):
        self.owner, self.reader, self.writer = owner, reader, writer
        self.method = method.upper()
        self.path = target.split("?", 1)[0].rstrip("/") or "/"
        self.headers = headers
        self.keep = True
        self.entry = LogEntry(method=self.method, path=self.path, body=None, headers=headers)

    # ---- writing ---------------------------------------------------------------------------------------------
    def _head(self, status: int, extra: str) -> bytes:
        return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{extra}"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n\r\n").encode()

    def send(self, status: int, body: Any, content_type: str = "application/json; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.entry.status = status
        head = self._head(status, f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n")
        self.writer.write(head if self.method == "HEAD" else head + data)

    def error(self, status: int, message: str) -> None:
        if self.path.startswith("/v1/"):
            kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            self.send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})
        else:
            self.send(status, {"error": message})

    def start_stream(self, content_type: str = "application/x-ndjson") -> None:
        self.entry.status = 200
        self.writer.write(self._head(200, f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"))

    def chunk(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")

    def drop(self) -> bool:
        """Close the connection without a byte of response (what a crashed server or a dead proxy does)."""
        self.entry.status = -1
        return False

    # ---- dispatch --------------------------------------------------------------------------------------------
    async def handle(self, raw: bytes) -> bool:
        owner = self.owner
        body: Any = None
        bad_json: Exception | None = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as err:
                bad_json = err
        self.entry.body = body
        owner._record(self.entry)
        route = ROUTES.get((self.method if self.method != "HEAD" else "GET", self.path))
        if route is None:
            self.send(404, "404 page not found", "text/plain")
            return True
        fault = owner._take_fault(self.path)
        self.entry.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "drop":
            return self.drop()
        if fault is not None and fault.kind == "hang":
            await self.unless_gone(asyncio.wait_for(owner._stopping.wait(), fault.seconds))
            return self.drop()
        if fault is not None and fault.kind == "status":
            message = fault.message or (BUSY_MESSAGE if fault.status == 503 and not self.path.startswith("/v1/")
                                        else DEFAULT_MESSAGES.get(fault.status, "error"))
            self.error(fault.status, message)
            return True
        if owner.api_key and self.path.startswith("/v1/") and \
                self.headers.get("authorization") != f"Bearer {owner.api_key}":
            self.error(401, "Incorrect API key provided")
        elif self.method == "POST" and not raw:
            self.error(400, "missing request body")
        elif bad_json is not None:
            self.error(400, f"invalid character looking for beginning of value: {bad_json}")
        elif self.method == "POST" and not isinstance(body, dict):
            self.error(400, "json: cannot unmarshal array into Go value of type api.Request")
        else:
            await route(self, body or {}, fault)
        return self.keep

    async def unless_gone(self, work: Any) -> tuple[bool, Any]:
        """Await ``work`` unless the client hangs up first (then cancel it, as Ollama does): (finished, result)."""
        if self.reader.gone.is_set():
            work.close()
            return False, None
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(self.reader.gone.wait())
        try:
            await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task.done():
            try:
                return True, task.result()
            except asyncio.TimeoutError:
                return True, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False, None

    def canceled(self) -> None:
        """The client left while its request waited (Ollama logs 499 ``request canceled``)."""
        self.entry.status = 499
        self.keep = False

    # ---- simple endpoints ------------------------------------------------------------------------------------
    async def root(self, body: dict, fault: Fault | None) -> None:
        self.send(200, "Ollama is running", "text/plain")

    async def version(self, body: dict, fault: Fault | None) -> None:
        self.send(200, {"version": self.owner.version})

    async def tags(self, body: dict, fault: Fault | None) -> None:
        self.send(200, {"models": list(self.owner.models.values())})

    async def ps(self, body: dict, fault: Fault | None) -> None:
        models = []
        for name, expires in list(self.owner._loaded.items()):
            info = self.owner.models.get(name)
            if info is None or (expires >= 0 and expires < time.time()):
                continue
            models.append({**info, "expires_at": now_rfc3339(expires - time.time() if expires >= 0 else 3.15e8),
                           "size_vram": info["size"], "context_length": self.owner.num_ctx_default})
        self.send(200, {"models": models})

    async def show(self, body: dict, fault: Fault | None) -> None:
        name = body.get("model") or body.get("name") or ""
        if not name:
            return self.error(400, "model is required")
        info = self.owner.models.get(normalize_model(name))
        if info is None:
            return self.error(404, f"model '{name}' not found")
        self.send(200, {"modelfile": f"FROM {info['name']}", "parameters": "stop \"<|eot_id|>\"",
                        "template": "{{ .Prompt }}", "details": info["details"],
                        "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                        "capabilities": ["completion", "tools"], "modified_at": info["modified_at"]})

    async def pull(self, body: dict, fault: Fault | None) -> None:
        name = body.get("model") or body.get("name") or ""
        registry = self.owner.registry
        known = registry is None or normalize_model(name) in {normalize_model(n) for n in registry}
        if not known:
            return self.error(500, "pull model manifest: file does not exist")
        self.owner.add_model(name)
        if not body.get("stream", True):
            return self.send(200, {"status": "success"})
        digest = "sha256:" + _digest(name)
        self.start_stream()
        for part in ({"status": "pulling manifest"},
                     {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 100, "completed": 50},
                     {"status": f"pulling {digest[7:19]}", "digest": digest, "total": 100, "completed": 100},
                     {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}):
            self.chunk(json.dumps(part).encode() + b"\n")
        self.end_stream()

    async def v1_models(self, body: dict, fault: Fault | None) -> None:
        data = [{"id": n, "object": "model", "created": 1700000000, "owned_by": "library"}
                for n in self.owner.models]
        self.send(200, {"object": "list", "data": data})

    # ---- generation ------------------------------------------------------------------------------------------
    async def chat(self, body: dict, fault: Fault | None) -> None:
        await self._generation(body, fault, api="chat")

    async def generate(self, body: dict, fault: Fault | None) -> None:
        await self._generation(body, fault, api="generate")

    async def v1_chat(self, body: dict, fault: Fault | None) -> None:
        await self._generation(body, fault, api="openai")

    @staticmethod
    def _request_shape(body: dict, api: str) -> tuple[list[dict[str, Any]], Any, dict[str, Any], bool]:
        """(messages, format, options, stream) in Ollama terms, whatever the API."""
        if api == "chat":
            return (body.get("messages") or [], body.get("format"), dict(body.get("options") or {}),
                    body.get("stream", True))
        if api == "generate":
            messages = ([{"role": "system", "content": body["system"]}] if body.get("system") else [])
            if body.get("prompt"):
                messages.append({"role": "user", "content": body["prompt"]})
            return messages, body.get("format"), dict(body.get("options") or {}), body.get("stream", True)
        fmt = None
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_object":
            fmt = "json"
        elif response_format.get("type") == "json_schema":
            fmt = (response_format.get("json_schema") or {}).get("schema")
        options = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0)}
        if body.get("seed") is not None:
            options["seed"] = body["seed"]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        return body.get("messages") or [], fmt, options, bool(body.get("stream", False))

    async def _generation(self, body: dict, fault: Fault | None, api: str) -> None:
        owner = self.owner
        name = body.get("model") or ""
        if not name:
            return self.error(404 if api == "generate" else 400,
                              "model '' not found" if api == "generate" else "model is required")
        model = normalize_model(name)
        if model not in owner.models or (fault is not None and fault.kind == "missing_model"):
            return self.error(404, f'model "{name}" not found, try pulling it first')
        messages, fmt, options, stream = self._request_shape(body, api)
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            return self.error(500, f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object')
        keep_alive = body.get("keep_alive")
        if keep_alive is not None and not isinstance(keep_alive, (int, float, str)):
            return self.error(400, "json: cannot unmarshal keep_alive into Go struct field")
        if body.get("think") and api != "openai":
            return self.error(400, f'"{name}" does not support thinking')
        if api != "openai" and not messages:
            return self._load_only(model, keep_alive, api)

        gate = owner.gate(model)
        if gate.pending < gate.slots:  # a free slot: no wait, nothing to watch
            entered = await gate.enter()
        else:  # queued: a client that gives up leaves the queue
            finished, entered = await self.unless_gone(gate.enter())
            if not finished:
                return self.canceled()
        if not entered:
            return self.error(503, BUSY_MESSAGE)
        try:
            expires = owner._loaded.get(model)
            loading = owner.load_latency if expires is None or 0 <= expires < time.time() else 0.0
            delay = owner.latency + loading + (fault.seconds if fault is not None and fault.kind == "latency"
                                               else 0.0)
            if delay > 0:
                finished, _ = await self.unless_gone(asyncio.sleep(delay))
                if not finished:
                    return self.canceled()
            try:
                text = owner.reply(messages, fmt, options)
            except Exception as err:  # a broken scripted reply: say so, loudly, instead of dropping the socket
                import traceback

                traceback.print_exc()
                return self.error(500, f"test server reply function failed: {type(err).__name__}: {err}")
            if fault is not None and fault.kind == "malformed_json":
                text = text[: max(1, len(text) // 2)] if text.startswith(("{", "[")) else '{"answer": "cut off'
            elif fault is not None and fault.kind == "schema_violation":
                text = json.dumps({"unexpected": "field", "score": "not a number"})
            self._mark_loaded(model, keep_alive)
            await self._answer(api, model, name, messages, text, options, stream, fault, loading)
        finally:
            gate.leave()

    def _mark_loaded(self, model: str, keep_alive: Any) -> None:
        seconds = 300.0
        if isinstance(keep_alive, (int, float)):
            seconds = float(keep_alive)
        elif isinstance(keep_alive, str) and keep_alive:
            match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", keep_alive)
            if match:
                seconds = float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]
        self.owner._loaded[model] = -1.0 if seconds < 0 else time.time() + seconds
        if seconds == 0:
            self.owner._loaded.pop(model, None)

    def _load_only(self, model: str, keep_alive: Any, api: str) -> None:
        reason = "unload" if keep_alive in (0, "0", "0s") else "load"
        if reason == "load":
            self._mark_loaded(model, keep_alive)
        else:
            self.owner._loaded.pop(model, None)
        out: dict[str, Any] = {"model": model, "created_at": now_rfc3339(), "done": True, "done_reason": reason}
        if api == "chat":
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        self.send(200, out)

    async def _answer(self, api: str, model: str, name: str, messages: list[dict[str, Any]], text: str,
                      options: dict[str, Any], stream: bool, fault: Fault | None, loading: float = 0.0) -> None:
        tokens = _tokens(text)
        limit = options.get("num_predict")
        reason = "stop"
        if isinstance(limit, int) and limit >= 0 and len(tokens) > limit:
            tokens, reason = tokens[:limit], "length"
        num_ctx = int(options.get("num_ctx") or self.owner.num_ctx_default)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        prompt_eval = min(max(1, prompt_chars // 4), num_ctx)
        latency_ns = int(self.owner.latency * 1e9)
        load_ns = int(loading * 1e9) + 1000
        metrics = {"total_duration": latency_ns + load_ns, "load_duration": load_ns, "prompt_eval_count": prompt_eval,
                   "prompt_eval_duration": latency_ns // 4, "eval_count": len(tokens),
                   "eval_duration": latency_ns - latency_ns // 4}
        mid_error = fault is not None and fault.kind == "error_mid_stream"
        created = now_rfc3339()  # once per answer: formatting a timestamp per chunk was the server's top cost
        if api == "openai":
            return await self._answer_openai(name, "".join(tokens), reason, prompt_eval, len(tokens), stream,
                                             mid_error, fault)
        if not stream:
            if mid_error:
                return self.error(500, fault.message or "an error was encountered while running the model")
            out = self._piece(api, model, created, "".join(tokens))
            out.update(done=True, done_reason=reason, **metrics)
            if api == "generate":
                out["context"] = [1, 2, 3]
            return self.send(200, out)
        self.start_stream()
        step = max(1, self.owner.chunk_words)
        pieces = ["".join(tokens[i:i + step]) for i in range(0, len(tokens), step)]
        for i, piece in enumerate(pieces):
            if mid_error and i == fault.after_chunks:
                break
            if fault is not None and fault.kind == "garbage_line" and i == fault.after_chunks:
                self.chunk(b"<html>proxy error</html>\n")
            self.chunk(json.dumps(self._piece(api, model, created, piece)).encode() + b"\n")
            await self.writer.drain()
        if mid_error:
            message = fault.message or "an error was encountered while running the model: unexpected EOF"
            self.chunk(json.dumps({"error": message}).encode() + b"\n")
        else:
            final = self._piece(api, model, created, "")
            final.update(done=True, done_reason=reason, **metrics)
            if api == "generate":
                final["context"] = [1, 2, 3]
            self.chunk(json.dumps(final).encode() + b"\n")
        self.end_stream()

    @staticmethod
    def _piece(api: str, model: str, created: str, content: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": created}
        if api == "chat":
            out["message"] = {"role": "assistant", "content": content}
        else:
            out["response"] = content
        out["done"] = False
        return out

    async def _answer_openai(self, name: str, text: str, reason: str, prompt_tokens: int, completion_tokens: int,
                             stream: bool, mid_error: bool, fault: Fault | None) -> None:
        finish = "length" if reason == "length" else "stop"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": f"chatcmpl-{self.owner.count()}", "created": int(time.time()), "model": name,
                "system_fingerprint": "fp_ollama"}
        if not stream:
            if mid_error:
                return self.error(500, fault.message or "an error was encountered while running the model")
            return self.send(200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage})
        self.start_stream("text/event-stream")
        for i, piece in enumerate(_tokens(text)):
            if mid_error and i == fault.after_chunks:
                message = fault.message or "an error was encountered while running the model"
                self.chunk(b"data: " + json.dumps({"error": {"message": message, "type": "api_error",
                                                            "param": None, "code": None}}).encode() + b"\n\n")
                return self.end_stream()
            delta = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]}
            self.chunk(b"data: " + json.dumps(delta).encode() + b"\n\n")
        last = {**base, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": finish}], "usage": usage}
        self.chunk(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        self.end_stream()


ROUTES: dict[tuple[str, str], Callable[[_Exchange, dict, Fault | None], Any]] = {
    ("GET", "/"): _Exchange.root,
    ("GET", "/api/version"): _Exchange.version,
    ("GET", "/api/tags"): _Exchange.tags,
    ("GET", "/api/ps"): _Exchange.ps,
    ("POST", "/api/show"): _Exchange.show,
    ("POST", "/api/pull"): _Exchange.pull,
    ("POST", "/api/chat"): _Exchange.chat,
    ("POST", "/api/generate"): _Exchange.generate,
    ("POST", "/v1/chat/completions"): _Exchange.v1_chat,
    ("GET", "/v1/models"): _Exchange.v1_models,
}


def main() -> None:
    """Run the server in its own process (benchmarks: keeps its threads off the client's GIL)."""
    import argparse

    parser = argparse.ArgumentParser(description="Ollama-protocol test server")
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument("--num-parallel", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=512)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-words", type=int, default=4)
    parser.add_argument("--model", action="append", default=None)
    args = parser.parse_args()
    server = OllamaServer(args.model or ("llama3.1:70b", "llama3.2:1b", "judge:latest"), port=args.port,
                          num_parallel=args.num_parallel, max_queue=args.max_queue, latency=args.latency,
                          chunk_words=args.chunk_words).start()
    print(f"serving on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
