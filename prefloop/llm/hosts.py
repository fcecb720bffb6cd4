"""Several Ollama servers behind one model setting, and which of them answers each request.

Users with more than one GPU run one ``ollama serve`` per GPU (or per box): Ollama never loads the same model
twice on one server, so more servers is how a long generation gets more parallel slots. A model setting may
therefore name several hosts, ``ollama:MODEL@http://a:11434,http://b:11434``, or a ``hosts`` list with each
server's slots, ``["http://a:11434=4", "http://b:11434=2"]`` (``=N``: the requests that server runs at once, its
``OLLAMA_NUM_PARALLEL``; a remote server does not report it, so the setting says it).

``HostRouter`` decides where each request goes: the host with the fewest requests in flight that has a free
slot (ties: the one listed first), so the busiest slots are never the ones a new request queues behind. A host
that fails with a transient error (5xx, connection refused, a timeout) is cooled down: no new request goes to it
for a second, doubling with every failure in a row up to 30 s, while the others take its work; its first success
ends the cool-down. With one host there is nowhere else to go, so nothing is cooled and the client's own backoff
(``RetryPolicy``) alone paces the retries.

The router counts what is in flight per host and per event loop (as ``ClientPool`` does: a new ``asyncio.run``
starts with fresh counts and connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Sequence

from prefloop.llm.pool import ClientPool

COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 30.0


@dataclass(frozen=True)
class Host:
    """One server: its URL and how many requests it runs at once (``None``: the client's default)."""

    url: str
    slots: int | None = None

    def __str__(self) -> str:
        return self.url + (f"={self.slots}" if self.slots else "")


def parse_hosts(value: str | Sequence[str]) -> list[Host]:
    """``"http://a:11434=4,http://b:11434"`` (or a list of such items) -> hosts, in order; duplicates refused.

    >>> parse_hosts("http://a:11434=4, http://b:11434")
    [Host(url='http://a:11434', slots=4), Host(url='http://b:11434', slots=None)]
    """
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    hosts: list[Host] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        url, sep, slots = item.rpartition("=")
        if sep and slots.strip().isdigit():
            if int(slots) < 1:
                raise ValueError(f"host '{item}': slots must be at least 1")
            host = Host(url.strip(), int(slots))
        elif sep:
            raise ValueError(f"host '{item}': write URL or URL=SLOTS (e.g. http://gpu0:11434=4)")
        else:
            host = Host(item)
        if any(h.url == host.url for h in hosts):
            raise ValueError(f"host {host.url} is listed twice")
        hosts.append(host)
    return hosts


class HostState:
    """One host as the router sees it: its connections, slots, requests in flight and cool-down."""

    def __init__(self, url: str, slots: int | None, pool: ClientPool):
        self.url, self.slots, self.pool = url, slots, pool
        self.in_flight = 0
        self.peak = 0              # most requests in flight at once (tests and benchmarks read it)
        self.served = 0            # requests that succeeded here
        self.failures = 0          # transient failures in a row
        self.cool_until = 0.0

    @property
    def free(self) -> bool:
        return self.slots is None or self.in_flight < self.slots

    def __repr__(self) -> str:
        return f"HostState({self.url}, slots={self.slots}, in_flight={self.in_flight})"


class HostRouter:
    """Route each request to a host (see the module docstring); ``slot()`` holds one of its slots."""

    def __init__(self, hosts: list[HostState], *, cooldown_s: float = COOLDOWN_S,
                 max_cooldown_s: float = MAX_COOLDOWN_S, clock: Callable[[], float] = time.monotonic):
        if not hosts:
            raise ValueError("a router needs at least one host")
        self.hosts = hosts
        self.cooldown_s, self.max_cooldown_s, self.clock = cooldown_s, max_cooldown_s, clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    @property
    def capacity(self) -> int | None:
        """Requests all hosts run at once (None when a host has no slot limit)."""
        if any(h.slots is None for h in self.hosts):
            return None
        return sum(h.slots for h in self.hosts)  # type: ignore[misc]

    def _check_loop(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._changed is None:
            self._loop, self._changed = loop, asyncio.Event()
            for h in self.hosts:  # the old loop's requests died with it
                h.in_flight = 0
        return self._changed

    def _wake(self) -> None:
        """Tell every waiting request that a slot was freed (each checks again)."""
        if self._changed is not None:
            old, self._changed = self._changed, asyncio.Event()
            old.set()

    def cooling(self, host: HostState) -> bool:
        return host.cool_until > self.clock()

    def alternative(self, tried: Sequence[HostState]) -> bool:
        """Another host, not tried yet for this request and not cooling, that could take it now or soon."""
        return any(h not in tried and not self.cooling(h) for h in self.hosts)

    async def _acquire(self, avoid: Sequence[HostState]) -> HostState:
        while True:
            changed = self._check_loop()
            now = self.clock()
            pool = [h for h in self.hosts if h not in avoid] or self.hosts
            ready = [h for h in pool if h.free and h.cool_until <= now]
            if ready:
                best = min(ready, key=lambda h: h.in_flight)  # min keeps the first listed on ties
                best.in_flight += 1
                best.peak = max(best.peak, best.in_flight)
                return best
            cooling = [h.cool_until - now for h in pool if h.free and h.cool_until > now]
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(cooling) if cooling else None)
            except asyncio.TimeoutError:
                pass  # a cool-down ended: look again

    @contextlib.asynccontextmanager
    async def slot(self, avoid: Sequence[HostState] = ()) -> AsyncIterator[tuple[HostState, Any]]:
        """``(host, client)`` for one request, waiting while every host is full or cooling. ``avoid``: hosts this
        request already failed on (used only while another host is there)."""
        host = await self._acquire(avoid)
        client = host.pool.take()
        try:
            yield host, client
        finally:
            host.in_flight -= 1
            host.pool.give(client)  # a broken connection is replaced by httpx on next use
            self._wake()

    def failed(self, host: HostState) -> None:
        """A transient failure on ``host``: cool it down (only when there are others to take its work)."""
        host.failures += 1
        if len(self.hosts) > 1:
            pause = min(self.max_cooldown_s, self.cooldown_s * 2 ** (host.failures - 1))
            host.cool_until = self.clock() + pause

    def succeeded(self, host: HostState) -> None:
        host.served += 1
        host.failures, host.cool_until = 0, 0.0

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.pool.aclose()
