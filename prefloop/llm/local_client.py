"""``local:MODEL``: a transformers model in this process, batched. The default that works with no server.

Two ways in:
- ``generate_batch(prompts, options)`` (sync): the judge's evaluation and the generator's on-policy answers hand
  over a whole list. A ``str`` prompt is used as raw text (plain or Alpaca, exactly as the SFT model was
  trained); a list of messages goes through the tokenizer's chat template with ``add_generation_prompt``.
- ``await chat(messages, ...)`` / ``await complete(prompt, options)``: concurrent workers each ask for one
  answer. Calls arriving within a few milliseconds are gathered into one batched ``generate`` run in a worker
  thread, so concurrency turns into batch size instead of into threads fighting over two cores.

Batches are left-padded (new tokens line up at the right edge), sorted by length to waste little on padding,
and stop at the end-of-sequence and end-of-turn tokens (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``).
Temperature 0 is greedy; otherwise sampling seeded by ``options.seed``. Only the new text is returned, stripped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from prefloop.llm.base import ChatReply, ClientSpec, GenOptions, ServerFatal
from prefloop.llm.retry import ClientStats, RawReply, RetryPolicy, send_once
from prefloop.llm.schema import template
from prefloop.records import Prompt

log = logging.getLogger("prefloop.llm")

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>", "</s>")
IN_PROCESS = RetryPolicy(attempts=1)  # no transport here: an error in generate() is not worth repeating


def json_instruction(schema: dict[str, Any]) -> str:
    """What a local model is told when a JSON reply is wanted (it has no grammar-constrained decoding here)."""
    return ("Reply with only a JSON object in this shape, no other text, replacing each <...> with your value:\n"
            + template(schema))


def with_json_instruction(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the JSON instruction appended to the last user turn (small models heed it best there)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{m['content']}\n\n{json_instruction(schema)}"
            return out
    return out + [{"role": "user", "content": json_instruction(schema)}]


def pick_threads(requested: int | None = None) -> int:
    """torch threads for generation: ``requested``, else the cores other processes are not already using.

    Why: torch's OpenMP threads spin; two of them on two cores beside another busy process made SmolLM2 ten times
    slower than one thread (measured: 20 s vs 2 s for a batch of 3 x 8 tokens). Decided once, at load time.
    """
    import torch

    if requested:
        return requested
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not on this platform
        busy = 0.0
    return max(1, min(torch.get_num_threads(), int(cores - busy + 0.5)))


@dataclass
class Generation:
    """One generated answer and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end token or stop string) or "length"


@dataclass
class _Pending:
    messages: Prompt
    options: GenOptions
    future: asyncio.Future


class LocalClient:
    """An ``LLMClient`` running a transformers causal LM in-process (CPU by default)."""

    def __init__(self, spec: ClientSpec, *, device: str = "cpu", dtype: str = "fp32", batch_size: int = 8,
                 batch_wait_ms: float = 5.0, threads: int | None = None, model: Any = None, tokenizer: Any = None):
        """``threads``: torch threads while generating (None: the cores not already busy, see pick_threads)."""
        self.spec = spec
        self.device, self.dtype = device, dtype
        self.batch_size = batch_size
        self.batch_wait = batch_wait_ms / 1000.0
        self.threads = threads
        self.stats = ClientStats()
        self._model, self._tokenizer = model, tokenizer
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generate at a time: two would only fight over the cores
        self._warned_long = False
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"LocalClient({self.spec}, device={self.device!r})"

    # ---- model -----------------------------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        """Load the model once (``prefloop.models``: a folder, a .gguf file, or ``smollm2``, the embedded one)."""
        with self._load_lock:
            if self._model is None:
                from prefloop.models import ModelNotFound, load_model

                try:
                    self._model, self._tokenizer = load_model(self.spec.model, dtype=self.dtype)
                except ModelNotFound as err:
                    raise ServerFatal(f"local model '{self.spec.model}': {err}") from err
                except OSError as err:
                    raise ServerFatal(f"local model '{self.spec.model}' could not be loaded: {err}") from err
                self._model.to(self.device).eval()
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            if self.threads is None:
                self.threads = pick_threads()
        return self._model, self._tokenizer

    def stop_token_ids(self) -> list[int]:
        """End-of-sequence plus every end-of-turn token the vocabulary has."""
        model, tokenizer = self.load()
        ids = set()
        for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
        return sorted(ids)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of one prompt: raw text as is, chat messages through the chat template."""
        _, tokenizer = self.load()
        if isinstance(prompt, str):
            ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
            return ids or [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        if not getattr(tokenizer, "chat_template", None):
            raise ServerFatal(f"local model '{self.spec.model}' has no chat template; give it text prompts")
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template already has any BOS

    # ---- batched generation ----------------------------------------------------------------------------------
    async def preflight(self) -> None:
        """Load the model now (seconds), so a bad name fails before any work."""
        await asyncio.to_thread(self.load)

    def generate_batch(self, prompts: list[Prompt], options: GenOptions | None = None) -> list[str]:
        """The new text for each prompt, in order (batched ``batch_size`` at a time)."""
        return [g.text for g in self.generate(prompts, options or GenOptions())]

    def generate(self, prompts: list[Prompt], options: GenOptions) -> list[Generation]:
        """``generate_batch`` with token counts and finish reasons."""
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths, less padding
        out: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, gen in zip(chunk, self._generate_ids([encoded[i] for i in chunk], options)):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _generate_ids(self, batch: list[list[int]], options: GenOptions) -> list[Generation]:
        import torch

        model, tokenizer = self.load()
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit:
            keep = max(1, limit - options.max_tokens)
            if any(len(ids) > keep for ids in batch) and not self._warned_long:
                self._warned_long = True
                log.warning("local:%s: a prompt is longer than the model's %d positions minus max_tokens %d; "
                            "keeping its last %d tokens", self.spec.model, limit, options.max_tokens, keep)
            batch = [ids[-keep:] for ids in batch]
        width = max(len(ids) for ids in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=self.device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        stops = self.stop_token_ids()
        kwargs: dict[str, Any] = {"max_new_tokens": options.max_tokens, "eos_token_id": stops,
                                  "pad_token_id": pad, "do_sample": options.temperature > 0}
        if options.temperature > 0:
            kwargs["temperature"] = options.temperature
            kwargs["top_p"] = options.top_p if options.top_p is not None else 1.0
            kwargs["top_k"] = 0
        else:  # silence "generation flags are not valid" when the model's config sets sampling defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self._generate_lock, torch.inference_mode():
            before = torch.get_num_threads()  # torch's setting is process-wide: restore it for the trainer
            torch.set_num_threads(self.threads or before)
            try:
                if options.temperature > 0 and options.seed is not None:
                    torch.manual_seed(options.seed)
                output = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            finally:
                torch.set_num_threads(before)
        results = []
        stop_set = set(stops)
        for row, ids in zip(output[:, width:].tolist(), batch):
            new = []
            for token in row:
                if token in stop_set:
                    break
                new.append(token)
            finished = len(new) < len(row) or len(new) < options.max_tokens
            text = tokenizer.decode(new, skip_special_tokens=True)
            for stop in options.stop:
                if stop in text:
                    text, finished = text[:text.index(stop)], True
            results.append(Generation(text=text.strip(), prompt_tokens=len(ids), completion_tokens=len(new),
                                      finish_reason="stop" if finished else "length"))
        return results

    # ---- chat: concurrent calls gathered into batches --------------------------------------------------------
    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   options: GenOptions | None = None) -> ChatReply:
        options = options or GenOptions()
        prompt = with_json_instruction(messages, schema) if schema is not None else messages

        async def send() -> RawReply:
            gen = await self._submit(prompt, options)
            return RawReply(text=gen.text, prompt_tokens=gen.prompt_tokens,
                            completion_tokens=gen.completion_tokens, finish_reason=gen.finish_reason)

        return await send_once(send, schema=schema, seed=options.seed, policy=IN_PROCESS, stats=self.stats,
                               model=str(self.spec), what=str(self.spec))

    async def complete(self, prompt: Prompt, options: GenOptions | None = None) -> str:
        """One prompt rendered as ``generate_batch`` renders it (raw text or chat), batched with concurrent calls.

        For async callers that hold one prompt each (the generator's on-policy answers): awaiting this from many
        tasks gives batched generation without the caller collecting batches.
        """
        return (await self._submit(prompt, options or GenOptions())).text

    async def _submit(self, messages: Prompt, options: GenOptions) -> Generation:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._batcher())
        future = loop.create_future()
        await self._queue.put(_Pending(messages, options, future))
        return await future

    async def _batcher(self) -> None:
        """Take what arrived within ``batch_wait``, up to ``batch_size``; run it; repeat."""
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            if self.batch_wait > 0:
                await asyncio.sleep(self.batch_wait)
            items = [first]
            while len(items) < self.batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait())
            groups: dict[GenOptions, list[_Pending]] = {}
            for item in items:
                groups.setdefault(item.options, []).append(item)
            for opts, group in groups.items():
                live = [p for p in group if not p.future.done()]  # a cancelled caller needs no answer
                if not live:
                    continue
                try:
                    gens = await asyncio.to_thread(self.generate, [p.messages for p in live], opts)
                except Exception as err:  # noqa: BLE001 - handed to each waiting caller
                    for p in live:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                for p, gen in zip(live, gens):
                    if not p.future.done():
                        p.future.set_result(gen)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, RuntimeError):
                pass
            self._worker = None
