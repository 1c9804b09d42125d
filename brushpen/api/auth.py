"""API-key auth as a FastAPI dependency: with a key set, every /v1 route needs `Authorization: Bearer KEY`.

The compare is constant-time (`hmac.compare_digest`), so response timing does not leak how much of
a guessed key was right. Without a key the API is open; `brushpen studio` warns when that open API
listens beyond the loopback interface.

Guessing is slowed by `FailedAuth`: after `BRUSHPEN_AUTH_FAILURES` (10) wrong keys or studio logins
from one address within `BRUSHPEN_AUTH_WINDOW` (60) seconds, every key check and login from that
address is a 429 with `Retry-After` until the oldest failure is that old; a right key does not pass
meanwhile either, so a guess cannot be told right from the answer.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict, deque

from fastapi import HTTPException, Request

from brushpen.api.handlers import error_response


def key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


class FailedAuth:
    """Failed keys and logins per client address, in a sliding window."""

    MAX_ADDRESSES = 10_000   # the oldest-touched addresses are forgotten past this

    def __init__(self, limit: int = 10, window: float = 60.0):
        self.limit, self.window = limit, window
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float] | None:
        fails = self._fails.get(who)
        while fails and fails[0] <= now - self.window:
            fails.popleft()
        return fails

    def retry_after(self, who: str) -> int | None:
        """Seconds until `who` may try again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            fails = self._recent(who, now)
            if fails is None or len(fails) < self.limit:
                return None
            return max(1, math.ceil(fails[0] + self.window - now))

    def failed(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            fails = self._recent(who, now)
            if fails is None:
                fails = self._fails[who] = deque(maxlen=self.limit)
            fails.append(now)
            self._fails.move_to_end(who)
            while len(self._fails) > self.MAX_ADDRESSES:
                self._fails.popitem(last=False)


def client_address(scope_or_request) -> str:
    client = scope_or_request.get("client") if isinstance(scope_or_request, dict) else scope_or_request.client
    return client[0] if client else "unknown"


def too_many(wait: int) -> HTTPException:
    return HTTPException(429, f"too many failed keys or logins from this address: try again in {wait} s",
                         headers={"Retry-After": str(wait)})


async def require_key(request: Request) -> None:
    key: str | None = request.app.state.api_key
    if not key:
        return
    limiter: FailedAuth = request.app.state.failed_auth
    who = client_address(request)
    if (wait := limiter.retry_after(who)) is not None:
        raise too_many(wait)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not key_matches(token.strip(), key):
        limiter.failed(who)
        raise HTTPException(401, "missing or incorrect API key: send 'Authorization: Bearer KEY' "
                                 "(the key given to brushpen studio --api-key or BRUSHPEN_API_KEY)",
                            headers={"WWW-Authenticate": "Bearer"})


class LoginLimit:
    """ASGI middleware for the studio's login form (`POST /login`, Gradio's): a refused login counts
    as a failure in the app's `FailedAuth`, and a limited address gets a 429 before Gradio runs."""

    def __init__(self, app, limiter: FailedAuth, path: str = "/login") -> None:
        self.app, self.limiter, self.path = app, limiter, path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        who = client_address(scope)
        if (wait := self.limiter.retry_after(who)) is not None:
            exc = too_many(wait)
            await error_response(429, exc.detail, "rate_limit_exceeded", headers=exc.headers)(scope, receive, send)
            return

        async def watch(message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.limiter.failed(who)
            await send(message)

        await self.app(scope, receive, watch)
