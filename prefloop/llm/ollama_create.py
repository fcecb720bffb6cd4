"""Create a model on an Ollama server over its HTTP API, as ``ollama create`` does, then check it answers.

1. every file is a blob: ``HEAD /api/blobs/sha256:…`` first (a rerun, or a file the server already holds from
   another model, is not sent again), else ``POST`` it (the official client's ``create_blob``, which streams the
   file); the server checks the digest;
2. ``POST /api/create`` with ``files`` (name -> digest) or ``from`` + ``adapters``, the ``template``,
   ``parameters`` (stop tokens), ``system`` and ``quantize``; its streamed status lines are handed to
   ``progress`` as they come;
3. verify: ``/api/show`` answers for the name, and one short ``/api/chat`` reply comes back.

Nothing goes anywhere but ``host``: no proxy from the environment (``trust_env=False``) and no redirects
(``follow_redirects=False``), so model weights cannot end up on another machine by accident. Uploads and the
create are not retried here (a rerun sends only the blobs still missing); short calls (HEAD, show) ride out a
restarting server.

Each kind of call has its own bound on silence, so a server that accepts connections and never answers is said
within about a minute, not after 3 x 600 s: metadata (HEAD, tags, show) ``SHORT_TIMEOUT_S`` per try as generate's
preflight, an upload's answer ``UPLOAD_TIMEOUT_S`` (the server hashes the blob as it arrives), and the create and
the verify chat the configured ``timeout`` (a conversion or a first load can be silent for minutes).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from prefloop.llm.base import ServerFatal, Transient
from prefloop.llm.ollama_client import DEFAULT_HOST, base_url, classify, model_key
from prefloop.llm.retry import RetryPolicy, with_retries

SHORT_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0)
SHORT_CALLS = ("HEAD", "tags", "show")   # retried with SHORT_RETRY; a failed one becomes ServerFatal
SHORT_TIMEOUT_S = 20.0    # as generate's preflight: a live server answers these at once, even while busy
UPLOAD_TIMEOUT_S = 120.0  # silence allowed while a blob is sent and after it, until the server's 201


@dataclass
class Created:
    """A model the server made: its name, digest and quantization as ``/api/tags`` lists them, and the verify
    chat's reply."""

    name: str
    host: str
    digest: str = ""
    quantization: str = ""
    reply: str = ""
    uploaded: int = 0      # blobs sent
    skipped: int = 0       # blobs the server already had


class OllamaModels:
    """Blob upload, create, show and verify against one Ollama server (sync: ``prefloop export`` is a command)."""

    def __init__(self, host: str | None = None, *, timeout: float = 600.0, connect_timeout: float = 10.0):
        import os

        import httpx
        import ollama

        self.url = base_url(host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.client = ollama.Client(host=self.url, timeout=httpx.Timeout(timeout, connect=connect_timeout),
                                    trust_env=False, follow_redirects=False)
        self._rng = random.Random()

    def close(self) -> None:
        self.client.close()

    def _fail(self, err: Exception, what: str) -> Exception:
        """``classify``, except that a server's error answer to an upload or a create is final: it is about the
        files (an architecture it cannot convert, a full disk), and the same request would fail the same way."""
        import ollama

        if isinstance(err, ollama.ResponseError) and what not in SHORT_CALLS:
            return ServerFatal(f"Ollama at {self.url}: {what} failed: {err.error}")
        return classify(err, f"Ollama at {self.url}: {what}")

    @contextlib.contextmanager
    def _bound(self, seconds: float) -> Iterator[None]:
        """The client's silence bound lowered to ``seconds`` (never raised above the configured one) for a call."""
        import httpx

        http = self.client._client
        before = http.timeout
        http.timeout = httpx.Timeout(min(seconds, self.timeout), connect=self.connect_timeout)
        try:
            yield
        finally:
            http.timeout = before

    def _short(self, call: Callable[[], Any], what: str) -> Any:
        import asyncio

        async def attempt() -> Any:
            try:
                return call()
            except Exception as err:  # noqa: BLE001 - classified
                raise self._fail(err, what) from err

        try:
            with self._bound(SHORT_TIMEOUT_S):
                return asyncio.run(with_retries(attempt, SHORT_RETRY, rng=self._rng, what=what))[0]
        except Transient as err:
            if "no reply" in str(err):
                raise ServerFatal(f"{err}: the server at {self.url} accepts connections but did not answer "
                                  f"{what} within {min(SHORT_TIMEOUT_S, self.timeout):g} s, {SHORT_RETRY.attempts} "
                                  "times; it is hung or overloaded: restart it (`ollama serve`) or give another "
                                  "--host") from err
            raise ServerFatal(f"{err}. Start the server (`ollama serve`) or give --host") from err

    # ---- blobs -----------------------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        """``HEAD /api/blobs/<digest>``: the official client has no call for it, so its own httpx client is used
        (the same settings: host, timeout, no proxy, no redirects)."""
        def head() -> bool:
            response = self.client._client.head(f"/api/blobs/{digest}")
            if response.status_code == 404:
                return False
            response.raise_for_status()
            return True

        return self._short(head, "HEAD")

    def upload(self, files: dict[str, Path], digests: dict[str, str],
               progress: Callable[[str], None] = lambda text: None) -> tuple[int, int]:
        """Send every file the server does not have yet; ``(uploaded, skipped)``."""
        uploaded = skipped = 0
        for name, path in files.items():
            digest = digests[name]
            if self.has_blob(digest):
                skipped += 1
                progress(f"{name}: already on the server")
                continue
            progress(f"{name}: uploading {Path(path).stat().st_size / 1e6:,.1f} MB")
            try:
                with self._bound(UPLOAD_TIMEOUT_S):
                    sent = self.client.create_blob(path)
            except Exception as err:  # noqa: BLE001 - classified
                raise self._fail(err, f"upload {name}") from err
            if sent != digest:
                raise ServerFatal(f"{path} changed since it was written (digest {sent}, expected {digest}); "
                                  "export the model again")
            uploaded += 1
        return uploaded, skipped

    # ---- create, show, verify --------------------------------------------------------------------------------
    def create(self, name: str, *, files: dict[str, str] | None = None, adapters: dict[str, str] | None = None,
               from_: str | None = None, template: str | None = None, system: str | None = None,
               parameters: dict[str, Any] | None = None, quantize: str | None = None,
               progress: Callable[[str], None] = lambda text: None) -> None:
        """``POST /api/create``, relaying each streamed status; a failure (before or mid-stream) is
        ``ServerFatal`` with the server's message, and the server has then registered nothing."""
        try:
            for part in self.client.create(name, quantize=quantize or None, from_=from_, files=files or None,
                                           adapters=adapters or None, template=template or None,
                                           system=system or None, parameters=parameters or None, stream=True):
                status = part.status or ""
                if part.total and part.completed is not None:
                    status += f" ({100 * part.completed / part.total:.0f}%)"
                progress(status)
        except Exception as err:  # noqa: BLE001 - classified
            raise self._fail(err, f"create {name}") from err

    def listed(self, name: str) -> Any:
        """The ``/api/tags`` entry for ``name`` (None when the server does not list it)."""
        listing = self._short(self.client.list, "tags")
        return next((m for m in listing.models if model_key(m.model or "") == model_key(name)), None)

    def verify(self, name: str, prompt: str = "Say hello in five words.") -> Created:
        """``/api/show`` answers for ``name`` and one short chat reply comes back; else ``ServerFatal``."""
        self._short(lambda: self.client.show(name), "show")
        try:
            reply = self.client.chat(model=name, messages=[{"role": "user", "content": prompt}],
                                     options={"num_predict": 16, "temperature": 0})
        except Exception as err:  # noqa: BLE001 - classified
            raise self._fail(err, f"chat with {name}") from err
        entry = self.listed(name)
        if entry is None:
            raise ServerFatal(f"Ollama at {self.url} answered for {name} but does not list it")
        return Created(name=name, host=self.url, digest=entry.digest or "",
                       quantization=(entry.details.quantization_level if entry.details else "") or "",
                       reply=(reply.message.content or "").strip())
