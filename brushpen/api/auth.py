"""API-key auth as a FastAPI dependency: with a key set, every /v1 route needs `Authorization: Bearer KEY`.

The compare is constant-time (`hmac.compare_digest`), so response timing does not leak how much of
a guessed key was right. Without a key the API is open; `brushpen studio` warns when that open API
listens beyond the loopback interface.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


async def require_key(request: Request) -> None:
    key: str | None = request.app.state.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not key_matches(token.strip(), key):
        raise HTTPException(401, "missing or incorrect API key: send 'Authorization: Bearer KEY' "
                                 "(the key given to brushpen studio --api-key or BRUSHPEN_API_KEY)",
                            headers={"WWW-Authenticate": "Bearer"})
