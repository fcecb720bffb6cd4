"""Single-connection HTTP clients, one per request in flight, reused: what the Ollama and OpenAI clients send with.

The pool is also the server's slot count: with ``slots`` set, at most that many requests are in flight through
it (a caller waits for a free connection), so the server's queue never fills with our requests while its
parallel slots stay busy. The client owns this limit; callers above it (the runner's jobs, both orders of a
judgment, a strategy's candidates) can be as concurrent as they like.

Why not one httpx client with a big pool: httpcore scans every pooled connection for every request, so one client
shared by 16-64 requests in flight cost 3-5 ms of CPU per request, against ~1.2 ms with a connection each
(measured on 2 cores; see bench/ollama_server.py). Why bound to an event loop: connections belong to the loop
that opened them, and callers such as the judge may ``asyncio.run`` twice with the same client object; a new loop
starts with fresh connections instead of failing with "Event loop is closed". Why one shared SSL context: httpx
loads the CA bundle for every client it makes (~50 ms of CPU each, 3 s for 64 clients), even for http:// URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable


class ClientPool:
    """``take()`` an idle client (or make one), ``give()`` it back; ``aclose()`` closes them all."""

    def __init__(self, make: Callable[[], Any], close: Callable[[Any], Awaitable[None]], slots: int | None = None):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._make, self._close = make, close
        self.slots = slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all: list[Any] = []
        self._idle: list[Any] = []
        self._ssl: Any = None
        self._gate: asyncio.Semaphore | None = None
        self.in_flight = 0

    def ssl_context(self, trust_env: bool) -> Any:
        """One SSL context for every client this pool makes (pass as httpx's ``verify``)."""
        if self._ssl is None:
            import httpx

            self._ssl = httpx.create_ssl_context(trust_env=trust_env)
        return self._ssl

    def _check_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (inspection): keep what there is
            return
        if loop is not self._loop:
            self._loop, self._all, self._idle = loop, [], []  # the old loop's connections died with it
            self._gate = asyncio.Semaphore(self.slots) if self.slots else None
            self.in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Any]:
        """A client for one request, waiting for a free slot when ``slots`` are all in use."""
        self._check_loop()
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        self.in_flight += 1
        client = self.take()
        try:
            yield client
        finally:
            self.in_flight -= 1
            self.give(client)  # a broken connection is replaced by httpx on next use
            if gate is not None:
                gate.release()

    def take(self) -> Any:
        self._check_loop()
        if self._idle:
            return self._idle.pop()
        client = self._make()
        self._all.append(client)
        return client

    def give(self, client: Any) -> None:
        if client in self._all:  # not from a previous loop
            self._idle.append(client)

    def any(self) -> Any:
        """A client for a one-off call (preflight); it stays available to requests."""
        self._check_loop()
        if not self._all:
            self.give(self.take())
        return self._all[0]

    def __len__(self) -> int:
        return len(self._all)

    async def aclose(self) -> None:
        """Close this loop's clients (another loop's connections cannot be closed from here; they are dropped)."""
        same_loop = asyncio.get_running_loop() is self._loop
        clients, self._all, self._idle = self._all, [], []
        for client in clients if same_loop else []:
            await self._close(client)
