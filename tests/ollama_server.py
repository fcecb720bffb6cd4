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

Models can also be created as Ollama creates them from a safetensors folder: ``HEAD``/``POST
/api/blobs/sha256:<hex>`` (the digest checked: 201, 400 on a mismatch; HEAD 200 or 404), then ``POST /api/create``
with ``files`` (name -> digest; names relative), optional ``template``/``parameters``/``system``/``quantize``, or
``from`` + ``adapters``. The create reads the files **with the field names Ollama's converter reads**
(``convert/convert.go``, ``convert_llama.go``, ``convert/tokenizer.go`` at ollama fb30760) and refuses, with a
``test server:`` message, what the real converter would import silently broken: an architecture it does not
convert, a ``rope_parameters.rope_theta`` without the top-level ``rope_theta`` it reads (it would fall back to
10,000), no chat template in ``tokenizer_config.json`` nor in the request (it would fall back to ``{{ .Prompt }}``).
Statuses stream as NDJSON; a created model is listed by ``/api/tags`` and served by ``/api/chat``. A create that
fails (``server.fail("error_mid_stream", endpoint="/api/create")``) registers nothing. ``server.blobs`` holds what
was uploaded; ``server.created[name]`` what each create was given.

Several servers at once (multi-host tests): start several ``OllamaServer`` objects; each has its own port, slots
(``peak_running``), faults and request log. ``add_model(name, digest=..., quantization=...)`` gives two servers
different builds of one model.

Server-wide settings are plain attributes: ``version`` (say ``"0.4.0"`` to test the old-server check),
``load_latency`` (extra seconds while a model is not loaded; ``keep_alive`` decides how long it stays),
``latency`` (fixed seconds per generation, held inside a slot), ``num_parallel`` and ``max_queue`` (FIFO queue;
past ``num_parallel + max_queue`` pending requests the answer is the 503 ``server busy``), ``chunk_words`` (words
per streamed chunk), ``reply`` (a callable ``(messages, format, options) -> str``), ``run_weights`` (a model created
from safetensors answers chat and generate from its own weights, sampled by the request's temperature and seed,
as the real server does; ``Weights``; a structured ``format`` still gets ``reply``).

Token log-probabilities as Ollama >= 0.12.11 returns them (``api/types.go``: request ``logprobs: bool`` and
``top_logprobs: int`` in 0..20 on ``/api/chat`` and ``/api/generate``, else 400 ``top_logprobs must be between 0
and 20``; each chunk carries ``logprobs: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]`` for
its own tokens; a whole reply, all of them). The OpenAI-compatible ``/v1/chat/completions`` takes the same two
fields and answers ``choices[0].logprobs.content`` in OpenAI's shape. A ``version`` below 0.12.11 ignores both
fields, as an old Go server ignores unknown JSON keys. Here a token is a word, a run of spaces or one punctuation
mark (so a JSON value such as ``"A"`` has its own token ``A``); ``alternatives`` (a callable ``(messages, format,
options, before, token) -> {token: logprob}``, ``before`` the text generated so far) scripts the distribution at
each token, the default puts 0.9 on the token generated.
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
GENERATION_PATHS = ("/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions")
# The safetensors architectures Ollama converts (convert/convert.go LoadModelMetadata at fb30760), kept here and
# not imported from prefloop: the double must not agree with the code it tests by construction.
CONVERTED_ARCHITECTURES = {
    "LlamaForCausalLM", "MllamaForConditionalGeneration", "Llama4ForConditionalGeneration",
    "Mistral3ForConditionalGeneration", "Ministral3ForCausalLM", "MixtralForCausalLM", "GemmaForCausalLM",
    "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Gemma3TextModel",
    "Gemma3nForConditionalGeneration", "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration", "Phi3ForCausalLM",
    "Qwen2ForCausalLM", "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration", "Olmo3ForCausalLM", "BertModel", "NomicBertModel", "NomicBertMoEModel",
    "CohereForCausalLM", "GptOssForCausalLM", "DeepseekOCRForCausalLM", "DeepseekV3ForCausalLM",
    "Glm4MoeLiteForCausalLM", "LagunaForCausalLM", "GlmOcrForConditionalGeneration", "Lfm2ForCausalLM",
    "Lfm2MoeForCausalLM", "Lfm2VlForConditionalGeneration", "Qwen3NextForCausalLM",
    "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration", "NemotronH_Nano_VL_V2",
    "NemotronH_Nano_Omni_Reasoning_V3", "NemotronHForCausalLM"}
ADAPTER_ARCHITECTURES = {"llama", "gemma2"}  # convert.ConvertAdapter
QUANTIZATIONS = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
                 "q5_k_s", "q5_k_m", "q6_k"}
# Go templates Ollama picks for a known Hugging Face chat template (its template/*.gotmpl, matched by content)
DETECTED_TEMPLATES = {"<|im_start|>": "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                                      "{{ end }}<|im_start|>assistant\n",
                      "<|start_header_id|>": "{{- range .Messages }}<|start_header_id|>{{ .Role }}"
                                             "<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{- end }}"
                                             "<|start_header_id|>assistant<|end_header_id|>\n\n"}
FAULT_KINDS = ("status", "latency", "error_mid_stream", "hang", "drop", "malformed_json", "schema_violation",
               "garbage_line", "missing_model")

Reply = Callable[[list[dict[str, Any]], Any, dict[str, Any]], str]
Alternatives = Callable[[list[dict[str, Any]], Any, dict[str, Any], str, str], dict[str, float]]
LOGPROBS_VERSION = (0, 12, 11)  # PR #12899


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


# A judged text between its id'd markers (judge/templates/*.txt): "[Assistant A's Answer id X]" ... "[End of ...]"
BLOCK = re.compile(r"\[([^\]\n]+?) id ([0-9a-f]+)\]\n(.*?)\n\[End of \1 id \2\]", re.S)


def judged_blocks(messages: list[dict[str, Any]]) -> dict[str, str]:
    """The texts of a rendered judge prompt by their block name ("Assistant A's Answer", "Model Response", ...),
    read the way the shipped templates delimit them."""
    text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return {m.group(1): m.group(3) for m in BLOCK.finditer(text)}


def pairwise_answers(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The answers shown in positions A and B of a rendered pairwise judge prompt ('' when one is absent).

    Scripted judges in the tests and benchmarks decide from these, so one parser follows the shipped template.
    """
    found = judged_blocks(messages)
    return found.get("Assistant A's Answer", ""), found.get("Assistant B's Answer", "")


def scored_answer(messages: list[dict[str, Any]]) -> str | None:
    """The model response a score-mode judge prompt asks about (None when it is not one)."""
    return judged_blocks(messages).get("Model Response")


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
                 chunk_words: int = 4, reply: Reply | None = None, port: int = 0, num_ctx_default: int = 4096,
                 bind: str = "127.0.0.1"):
        self.models: dict[str, dict[str, Any]] = {}
        for name in models:
            self.add_model(name)
        self.version = version
        self.num_parallel, self.max_queue = num_parallel, max_queue
        self.latency = latency
        self.chunk_words = chunk_words
        self.reply: Reply = reply or default_reply
        self.alternatives: Alternatives | None = None  # the next-token distribution when logprobs are asked
        self.num_ctx_default = num_ctx_default
        self.load_latency = 0.0  # extra seconds when a model is not loaded (first use, or after keep_alive ran out)
        self.registry: set[str] | None = None  # names /api/pull can fetch; None = any
        self.api_key: str | None = None  # when set, /v1/* wants "Authorization: Bearer <key>" (hosted-API style)
        self.faults: list[Fault] = []
        self.log: list[LogEntry] = []
        self.blobs: dict[str, bytes] = {}               # "sha256:<hex>" -> content
        self.created: dict[str, dict[str, Any]] = {}    # model name -> what its /api/create carried
        self.run_weights = False  # True: a model created from safetensors answers from its own weights (Weights)
        self._weights: dict[str, Weights] = {}          # model name -> its loaded weights, per create
        self._port, self.bind = port, bind  # bind "0.0.0.0" to be reached at this machine's own address
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

        self._server = await loop.create_server(protocol, self.bind, self._port, backlog=1024,
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
    def add_model(self, name: str, *, digest: str | None = None, quantization: str = "Q4_K_M",
                  family: str = "llama", size: int | None = None) -> None:
        """List a model (as if pulled). Two servers given the same name list the same digest unless told
        otherwise (``digest``, ``quantization``): a multi-host mix of builds."""
        full = normalize_model(name)
        self.models[full] = {"name": full, "model": full, "modified_at": now_rfc3339(),
                             "size": size or 1_000_000 + len(full), "digest": digest or _digest(full + quantization),
                             "details": {"parent_model": "", "format": "gguf", "family": family,
                                         "families": [family], "parameter_size": "8.0B",
                                         "quantization_level": quantization}}

    def weights(self, model: str) -> "Weights | None":
        """With ``run_weights``: the created model's own weights (loaded on first use after each create), else
        None (the scripted ``reply`` answers). Adapters and ``from`` models have no weights of their own here."""
        made = self.created.get(model)
        if not self.run_weights or not made or not made["files"]:
            return None
        key = json.dumps(made["files"], sort_keys=True)
        loaded = self._weights.get(model)
        if loaded is None or loaded.key != key:
            loaded = self._weights[model] = Weights({n: self.blobs[d] for n, d in made["files"].items()}, key)
        return loaded

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


def _safetensors_problem(name: str, data: bytes) -> str:
    """What the converter's safetensors reader would fail on: a bad header, or a dtype it does not take."""
    import struct

    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
    except (struct.error, ValueError):
        return f"{name}: not a safetensors file"
    kinds = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    if not kinds <= {"F32", "F16", "BF16"}:
        return f"{name}: unsupported safetensors dtype(s) {sorted(kinds - {'F32', 'F16', 'BF16'})}"
    return ""


class Weights:
    """A created model run from the files its create named, as Ollama runs what it imported: the test server's
    stand-in for llama.cpp (``OllamaServer.run_weights``). The safetensors and tokenizer are loaded with
    transformers (float32; a ``quantize`` is recorded, not applied); a chat becomes the prompt through the
    tokenizer's chat template (the one Ollama detects its Go template from), ``raw`` generate sends the prompt as
    it is. Sampling follows the request's options as Ollama does: ``temperature`` (default 0.8; 0 is greedy),
    ``seed`` (the same request with the same seed gives the same answer; without one, any), up to ``num_predict``
    tokens (default here 128) or the end-of-turn token, whichever comes first."""

    def __init__(self, files: dict[str, bytes], key: str = ""):
        import shutil
        import tempfile
        from pathlib import Path

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(tempfile.mkdtemp(prefix="ollama-test-model-"))
        try:
            for name, data in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.key = key
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]], options: dict[str, Any], raw: str | None = None) -> str:
        import torch

        tok = self.tokenizer
        prompt = raw if raw is not None else tok.apply_chat_template(messages, tokenize=False,
                                                                     add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        temperature = float(options.get("temperature", 0.8))
        seed = options.get("seed")
        rng = torch.Generator().manual_seed(int(seed) if seed is not None else random.randrange(2**31))
        limit = options.get("num_predict")
        limit = 128 if not isinstance(limit, int) or limit < 0 else limit
        out: list[int] = []
        with self._lock, torch.no_grad():
            for _ in range(limit):
                logits = self.model(ids).logits[0, -1].float()
                if temperature <= 0:
                    token = int(logits.argmax())
                else:
                    token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=rng))
                if token == tok.eos_token_id:
                    break
                out.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        return tok.decode(out, skip_special_tokens=True)


def _tokens(text: str) -> list[str]:
    """Words with their trailing space: the server's stand-in for model tokens (num_predict counts these)."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _logprob_tokens(text: str) -> list[str]:
    """The server's tokens for log-probabilities: words, runs of spaces, single punctuation marks."""
    return re.findall(r"\s+|\w+|[^\w\s]", text)


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("-")[0].split(".")[:3])
    except ValueError:
        return (0, 0, 0)


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


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
        binary = self.path.startswith("/api/blobs/")
        if raw and not binary:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as err:
                bad_json = err
        self.entry.body = {"bytes": len(raw)} if binary else body
        owner._record(self.entry)
        if binary:
            route = _Exchange.blob if self.method in ("HEAD", "POST") else None
        else:
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
        elif binary:
            await route(self, raw, fault)
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
        made = self.owner.created.get(normalize_model(name), {})
        stops = (made.get("parameters") or {}).get("stop", ["<|eot_id|>"]) if made else ["<|eot_id|>"]
        out = {"modelfile": f"FROM {info['name']}", "parameters": "\n".join(f'stop "{t}"' for t in stops),
               "template": made.get("template", "{{ .Prompt }}"), "details": info["details"],
               "model_info": {"general.architecture": info["details"]["family"], "llama.context_length": 131072},
               "capabilities": ["completion", "tools"], "modified_at": info["modified_at"]}
        if made.get("system"):
            out["system"] = made["system"]
        self.send(200, out)

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

    # ---- blobs and create (``ollama create`` over HTTP) --------------------------------------------------------
    def _blob_digest(self) -> str | None:
        digest = self.path[len("/api/blobs/"):]
        return digest if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else None

    async def blob(self, body: bytes, fault: Fault | None) -> None:
        digest = self._blob_digest()
        if digest is None:
            return self.error(400, "invalid digest format")
        if self.method == "HEAD":
            if digest in self.owner.blobs:
                return self.send(200, "")
            return self.error(404, f'blob "{digest}" not found')
        if digest in self.owner.blobs:
            return self.send(200, "")
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if got != digest:
            return self.error(400, f'digest mismatch, expected "{digest}", got "{got}"')
        self.owner.blobs[digest] = body
        self.send(201, "")

    async def create(self, body: dict, fault: Fault | None) -> None:
        owner = self.owner
        name = body.get("model") or body.get("name") or ""
        files, adapters = body.get("files"), body.get("adapters")
        for group in (files or {}, adapters or {}):
            for path, digest in group.items():
                if path.startswith(("/", "\\")) or "\\" in path or ".." in path.split("/") or not path:
                    return self.error(400, "file path must be relative")
                if not digest:
                    return self.error(400, "invalid digest format")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?", name):
            return self.error(400, "invalid model name")
        quantize = (body.get("quantize") or "").lower()
        if quantize and quantize not in QUANTIZATIONS:
            return self.error(400, f"unsupported quantization type {body['quantize']}")
        if not files and not body.get("from"):
            return self.error(400, "neither 'from' or 'files' was specified")
        missing = [d for d in list((files or {}).values()) + list((adapters or {}).values()) if d not in owner.blobs]
        if missing:  # the real server fails linking the blob, before any status line
            return self.error(500, f"link {missing[0]}: no such file or directory")
        statuses: list[dict[str, Any]] = []
        info: dict[str, Any] = {"template": body.get("template"), "parameters": body.get("parameters") or {},
                                "system": body.get("system"), "quantize": quantize, "files": files or {},
                                "adapters": adapters or {}, "from": body.get("from")}
        family = "llama"
        if files:
            read = {path: owner.blobs[d] for path, d in files.items()}
            problem, family, detected = self._convertible(read, body)
            if problem:
                return self.error(500, problem)
            if not info["template"]:
                info["template"] = detected
            statuses.append({"status": "converting model"})
        else:
            base = owner.models.get(normalize_model(body["from"]))
            if base is None:
                return self.error(404, f"model '{body['from']}' not found")
            family = base["details"]["family"]
            made = owner.created.get(normalize_model(body["from"]), {})
            info["template"] = info["template"] or made.get("template") or "{{ .Prompt }}"
            if adapters:
                if family not in ADAPTER_ARCHITECTURES:
                    return self.error(400, "unsupported architecture")
                if "adapter_config.json" not in adapters or not any(n.endswith(".safetensors") for n in adapters):
                    return self.error(400, "no files provided to convert")
                config = json.loads(owner.blobs[adapters["adapter_config.json"]])
                if not config.get("lora_alpha"):
                    return self.error(400, "test server: adapter_config.json has no lora_alpha (Ollama reads "
                                           "the LoRA scale from it)")
                statuses.append({"status": "converting adapter"})
        layer = "sha256:" + _digest(json.dumps(info, sort_keys=True, default=str))
        statuses.append({"status": f"creating new layer {layer}"})
        if quantize:
            statuses.append({"status": f"quantizing F16 model to {quantize.upper().replace('_K', '_K')}",
                             "digest": "0000000000000000000", "total": 100, "completed": 100})
        statuses += [{"status": "writing manifest"}, {"status": "success"}]
        stream = body.get("stream", True)
        mid_error = fault is not None and fault.kind == "error_mid_stream"
        if stream:
            self.start_stream()
        for i, status in enumerate(statuses):
            if mid_error and i == fault.after_chunks:
                message = fault.message or "write model: no space left on device"
                if stream:
                    self.chunk(json.dumps({"error": message}).encode() + b"\n")
                    return self.end_stream()
                return self.error(500, message)
            if status["status"] == "success":  # registered only once everything before it worked
                full = normalize_model(name)
                quant = quantize.upper() if quantize else "F16"
                owner.add_model(name, digest=_digest(layer + quant), quantization=quant, family=family)
                owner.created[full] = info
            if stream:
                self.chunk(json.dumps(status).encode() + b"\n")
                await self.writer.drain()
        if stream:
            self.end_stream()
        else:
            self.send(200, {"status": "success"})

    @staticmethod
    def _convertible(read: dict[str, bytes], body: dict) -> tuple[str, str, str]:
        """(problem or "", family, detected template): what Ollama's safetensors converter would make of these
        files, read with the field names it reads."""
        if not any(n.endswith(".safetensors") for n in read):
            return "unknown type", "", ""
        if "config.json" not in read:
            return "open config.json: file does not exist", "", ""
        config = json.loads(read["config.json"])
        archs = config.get("architectures") or []
        if not archs:
            return "unknown architecture", "", ""
        if archs[0] not in CONVERTED_ARCHITECTURES:
            return f'unsupported architecture "{archs[0]}"', "", ""
        nested = config.get("rope_parameters") or {}
        theta = nested.get("rope_theta") if isinstance(nested, dict) else None
        if theta is not None and config.get("rope_theta") != theta:
            return (f"test server: config.json has rope_parameters.rope_theta = {theta} but top-level rope_theta = "
                    f"{config.get('rope_theta')}: Ollama's converter reads only the top-level rope_theta (and "
                    "rope_scaling) and would use a RoPE base of 10000", "", "")
        if "tokenizer.json" not in read and "tokenizer.model" not in read:
            return "open tokenizer.model: file does not exist", "", ""
        for fname, data in read.items():
            if fname.endswith(".safetensors"):
                problem = _safetensors_problem(fname, data)
                if problem:
                    return problem, "", ""
        template = ""
        if "tokenizer_config.json" in read:
            template = json.loads(read["tokenizer_config.json"]).get("chat_template") or ""
        if not template and not body.get("template"):
            return ("test server: no chat template in tokenizer_config.json and none in the request: Ollama "
                    "would fall back to {{ .Prompt }} (transformers 5 writes it to chat_template.jinja, which "
                    "the converter does not read)", "", "")
        detected = next((t for marker, t in DETECTED_TEMPLATES.items() if marker in template), "{{ .Prompt }}")
        family = str(config.get("model_type") or "llama")
        return "", family, detected

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

    async def v1_completions(self, body: dict, fault: Fault | None) -> None:
        await self._generation(body, fault, api="openai_text")

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
        if api == "openai_text":
            prompt = body.get("prompt") or ""
            messages = [{"role": "user", "content": prompt if isinstance(prompt, str) else "".join(prompt)}]
        else:
            messages = body.get("messages") or []
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
        return messages, fmt, options, bool(body.get("stream", False))

    async def _generation(self, body: dict, fault: Fault | None, api: str) -> None:
        owner = self.owner
        name = body.get("model") or ""
        top = body.get("top_logprobs")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool)):
            return self.error(400, "json: cannot unmarshal top_logprobs into Go struct field of type int")
        if top is not None and not 0 <= top <= 20:  # checked before the model, as server/routes.go does
            return self.error(400, "top_logprobs must be between 0 and 20")
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
        openai = api.startswith("openai")
        if body.get("think") and not openai:
            return self.error(400, f'"{name}" does not support thinking')
        if api == "generate" and body.get("raw") and (body.get("template") or body.get("system") or
                                                      body.get("context")):
            return self.error(400, "raw mode does not support template, system, or context")
        logprobs = None  # how many alternatives per token, when log-probabilities are asked and known here
        if body.get("logprobs") is True and _version_tuple(owner.version) >= LOGPROBS_VERSION:
            logprobs = int(top or 0)
        if not openai and not messages:
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
                raw = body.get("prompt") if api == "generate" and body.get("raw") else None
                weights = owner.weights(model) if fmt in (None, "") else None
                text = (await asyncio.to_thread(weights, messages, options, raw) if weights is not None
                        else owner.reply(messages, fmt, options))
            except Exception as err:  # a broken scripted reply: say so, loudly, instead of dropping the socket
                import traceback

                traceback.print_exc()
                return self.error(500, f"test server reply function failed: {type(err).__name__}: {err}")
            if fault is not None and fault.kind == "malformed_json":
                text = text[: max(1, len(text) // 2)] if text.startswith(("{", "[")) else '{"answer": "cut off'
            elif fault is not None and fault.kind == "schema_violation":
                text = json.dumps({"unexpected": "field", "score": "not a number"})
            self._mark_loaded(model, keep_alive)
            scored = None if logprobs is None else (messages, fmt, options, logprobs)
            await self._answer(api, model, name, messages, text, options, stream, fault, loading, scored)
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

    def _logprobs(self, scored: tuple[Any, ...], before: str, piece: str) -> list[dict[str, Any]]:
        """Ollama's ``logprobs`` entries for the tokens of ``piece`` (``before``: the reply so far)."""
        messages, fmt, options, k = scored
        out = []
        for token in _logprob_tokens(piece):
            if self.owner.alternatives is not None:
                dist = dict(self.owner.alternatives(messages, fmt, options, before, token))
            else:
                dist = {token: -0.10536}  # log 0.9
            dist.setdefault(token, min(dist.values(), default=0.0) - 1.0)
            entry = _entry(token, dist[token])
            if k:
                ranked = sorted(dist.items(), key=lambda kv: -kv[1])[:k]
                entry["top_logprobs"] = [_entry(t, lp) for t, lp in ranked]
            out.append(entry)
            before += token
        return out

    async def _answer(self, api: str, model: str, name: str, messages: list[dict[str, Any]], text: str,
                      options: dict[str, Any], stream: bool, fault: Fault | None, loading: float = 0.0,
                      scored: tuple[Any, ...] | None = None) -> None:
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
        if api.startswith("openai"):
            return await self._answer_openai(name, "".join(tokens), reason, prompt_eval, len(tokens), stream,
                                             mid_error, fault, text_completion=api == "openai_text", scored=scored)
        if not stream:
            if mid_error:
                return self.error(500, fault.message or "an error was encountered while running the model")
            out = self._piece(api, model, created, "".join(tokens))
            if scored is not None:
                out["logprobs"] = self._logprobs(scored, "", "".join(tokens))
            out.update(done=True, done_reason=reason, **metrics)
            if api == "generate":
                out["context"] = [1, 2, 3]
            return self.send(200, out)
        self.start_stream()
        step = max(1, self.owner.chunk_words)
        pieces = ["".join(tokens[i:i + step]) for i in range(0, len(tokens), step)]
        before = ""
        for i, piece in enumerate(pieces):
            if mid_error and i == fault.after_chunks:
                break
            if fault is not None and fault.kind == "garbage_line" and i == fault.after_chunks:
                self.chunk(b"<html>proxy error</html>\n")
            part = self._piece(api, model, created, piece)
            if scored is not None:
                part["logprobs"] = self._logprobs(scored, before, piece)
                before += piece
            self.chunk(json.dumps(part).encode() + b"\n")
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
                             stream: bool, mid_error: bool, fault: Fault | None, text_completion: bool = False,
                             scored: tuple[Any, ...] | None = None) -> None:
        finish = "length" if reason == "length" else "stop"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": f"chatcmpl-{self.owner.count()}", "created": int(time.time()), "model": name,
                "system_fingerprint": "fp_ollama"}
        if text_completion:  # /v1/completions (no streaming here: prefloop's client does not stream it)
            if mid_error:
                return self.error(500, fault.message or "an error was encountered while running the model")
            return self.send(200, {**base, "object": "text_completion", "choices": [
                {"index": 0, "text": text, "finish_reason": finish}], "usage": usage})
        if not stream:
            if mid_error:
                return self.error(500, fault.message or "an error was encountered while running the model")
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish}
            if scored is not None:  # OpenAI's shape: choices[].logprobs.content[]
                choice["logprobs"] = {"content": self._logprobs(scored, "", text)}
            return self.send(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        self.start_stream("text/event-stream")
        before = ""
        for i, piece in enumerate(_tokens(text)):
            if mid_error and i == fault.after_chunks:
                message = fault.message or "an error was encountered while running the model"
                self.chunk(b"data: " + json.dumps({"error": {"message": message, "type": "api_error",
                                                            "param": None, "code": None}}).encode() + b"\n\n")
                return self.end_stream()
            delta = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]}
            if scored is not None:
                delta["choices"][0]["logprobs"] = {"content": self._logprobs(scored, before, piece)}
                before += piece
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
    ("POST", "/api/create"): _Exchange.create,
    ("POST", "/api/chat"): _Exchange.chat,
    ("POST", "/api/generate"): _Exchange.generate,
    ("POST", "/v1/chat/completions"): _Exchange.v1_chat,
    ("POST", "/v1/completions"): _Exchange.v1_completions,
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
