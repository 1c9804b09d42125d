"""Every error as OpenAI's JSON body, `{"error": {"message", "type", "param", "code"}}`, never a traceback.

User errors from the services (`brushpen.errors`) become 4xx by their `http_status`; request
validation (malformed JSON, unknown or out-of-range fields, non-UTF-8 bodies) becomes a 400 naming
the field; anything unexpected is logged with its traceback and answered with a short 500.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from brushpen.errors import (BadInput, BadParameter, BrokenModel, BrushpenError, EngineUnavailable, ModelNotFound,
                             UnsafeWeights)

log = logging.getLogger("brushpen.api")

_CODES = {BadParameter: "invalid_value", BadInput: "invalid_input", ModelNotFound: "model_not_found",
          BrokenModel: "broken_model", UnsafeWeights: "unsafe_weights", EngineUnavailable: "engine_unavailable"}
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error"}


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    """OpenAI's error body: the one builder, for answers, stream events and batch output lines."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def status_error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """The error body of an answer with HTTP `status`: its type follows the status, as OpenAI's do."""
    kind = "server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error")
    return error_body(message, kind, code, param)


def user_error(exc: BrushpenError, message: str | None = None) -> tuple[int, dict]:
    """A user error as (status, body): the status it carries (400 if none) and its code."""
    status = getattr(exc, "http_status", 400)
    code = getattr(exc, "code", None) or _CODES.get(type(exc))
    return status, status_error_body(status, str(exc) if message is None else message, code)


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_error_body(status, message, code, param), status_code=status, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts)


def validation_error_body(errors: Sequence[dict]) -> dict:
    """One readable message for pydantic's error list, naming each field at fault."""
    messages, first = [], None
    for err in errors[:5]:
        field = _field(err.get("loc", ()))
        kind = err.get("type", "")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = f"unknown parameter '{field}'"
        elif kind == "json_invalid":
            ctx = err.get("ctx") or {}
            where = f" at character {field}" if field.isdigit() else ""
            msg, field = f"the body is not valid JSON{where}: {ctx.get('error', msg)}", ""
        elif kind == "missing":
            msg = f"missing required parameter '{field}'"
        elif field:
            msg = f"{field}: {msg}"
        else:
            msg = f"the body must be a JSON object of parameters ({msg})"
        messages.append(msg)
        first = first or (field or None, kind)
    field, kind = first or (None, "")
    code = {"extra_forbidden": "unknown_parameter", "json_invalid": "invalid_json",
            "missing": "missing_required_parameter"}.get(kind, "invalid_value")
    return error_body("; ".join(messages) or "invalid request", "invalid_request_error", code, field)


def install(app: FastAPI) -> None:
    @app.exception_handler(BrushpenError)
    async def _brushpen(request: Request, exc: BrushpenError) -> JSONResponse:
        status, body = user_error(exc)
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 429 else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors()), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
                429: "rate_limit_exceeded"}.get(exc.status_code)
        if exc.status_code == 400 and "parsing the body" in message:
            message, code = "the body could not be read: send UTF-8 JSON", "invalid_body"
        elif exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, code, headers=getattr(exc, "headers", None))


class CatchAll:
    """ASGI middleware, outermost of ours: an unexpected exception becomes the 500 error body, and the
    connection stays usable. Starlette's own catch-all re-raises after answering, and uvicorn then
    drops a keep-alive connection without `Connection: close`, so a client's next request on it
    failed with ECONNRESET. An exception after the response has started is re-raised: the server
    closes that connection, the only honest end for a half-sent body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(500, f"internal error ({type(exc).__name__}); the server log has the details",
                                      "internal_error")
            await response(scope, receive, send)
