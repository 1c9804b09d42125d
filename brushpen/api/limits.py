"""Limits that keep one busy or hostile client from taking the server down.

- `BodyLimit`: an ASGI middleware that reads a request body up to a cap (a larger one for file
  uploads) and answers 413 beyond it, counting real bytes, not the Content-Length a client claims.
- `WorkQueue`: at most `running` generations at once and `waiting` more in line; past that a
  request gets 429 at once rather than piling up threads and memory. Generation runs in the
  threadpool, off the event loop, so /health and the UI stay responsive while models work.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brushpen.errors import BrushpenError

T = TypeVar("T")


class Busy(BrushpenError):
    """The work queue is full."""

    http_status = 429
    code = "rate_limit_exceeded"


class BodyLimit:
    """413 for bodies over `max_bytes` (`upload_bytes` on paths starting with an upload prefix)."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int, upload_prefixes: tuple[str, ...] = ()):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes
        self.upload_prefixes = upload_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        # The Gradio UI has its own upload handling and limits; ours cover the API.
        if not (path.startswith("/v1/") or path == "/v1"):
            return await self.app(scope, receive, send)
        cap = self.upload_bytes if path.startswith(self.upload_prefixes) else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return await _too_large(send, cap)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > cap:
                return await _too_large(send, cap)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
        if content_type.startswith(b"application/json"):
            try:
                whole.decode("utf-8")   # JSON is UTF-8 (RFC 8259); a UTF-16 body is refused, not guessed at
            except UnicodeDecodeError:
                return await _refuse(send, 400, "the body is not UTF-8: send UTF-8 JSON", "invalid_body")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()   # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)


async def _too_large(send: Send, cap: int) -> None:
    await _refuse(send, 413, f"the request body is larger than the limit of {cap:,} bytes", "request_too_large")


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class WorkQueue:
    """A bounded line for generation work: `running` at once, `waiting` more, 429 past that."""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self._inflight = 0
        self._sem: asyncio.Semaphore | None = None   # made on first use, inside the server's loop

    @property
    def inflight(self) -> int:
        return self._inflight

    def check(self) -> None:
        """Refuse now, before any response starts, when the line is full."""
        if self._inflight >= self.running + self.waiting:
            raise Busy(f"the server is busy: {self._inflight} generation requests are running or waiting "
                       f"(limit {self.running + self.waiting}); retry shortly")

    async def acquire(self) -> None:
        """Take a slot by hand, for work that outlives its handler (a stream's generating thread);
        `release` gives it back, from the event loop, when that work has really ended."""
        self._inflight += 1
        try:
            if self._sem is None:
                self._sem = asyncio.Semaphore(self.running)
            await self._sem.acquire()
        except BaseException:   # cancelled while waiting in line
            self._inflight -= 1
            raise

    def release(self) -> None:
        assert self._sem is not None
        self._sem.release()
        self._inflight -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the threadpool once a slot is free; 429 if the line is full."""
        self.check()
        async with self.slot():
            return await run_in_threadpool(fn, *args)


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Light blocking work (SQLite, file reads) off the event loop, outside the generation queue."""
    return await run_in_threadpool(fn, *args)
