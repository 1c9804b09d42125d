"""`create_app`: the FastAPI application behind `brushpen studio`, with OpenAI-style routes under /v1.

Routes: `GET /health` (open), and under /v1 (behind the API key when one is set) models, images,
completions, chat completions, files and batches; `/docs` is FastAPI's generated OpenAPI page.
The app starts fast because nothing heavy is loaded here: a background thread imports the
services' libraries while /health already answers, and each model loads on the first request
that needs it. The batch worker starts with the app and
picks up any batch a previous run left unfinished.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from starlette.routing import compile_path

import brushpen
from brushpen.api import (handlers, metrics, routes_batches, routes_detect, routes_finetune, routes_images,
                          routes_models, routes_text, service)
from brushpen.api.auth import FailedAuth, require_key
from brushpen.api.deps import Queue
from brushpen.api.limits import BodyLimit, WorkQueue
from brushpen.api.responses import ErrorResponse, Health
from brushpen.generators.jobs import JobStore
from brushpen.generators.worker import Worker


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


@dataclass
class ApiSettings:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20           # a JSON request; a brief is at most 2,000 characters
    max_upload_bytes: int = 32 << 20        # a batch input file
    running: int = 2                        # generations at once (per-model locks serialise further)
    waiting: int = 32                       # more in line before 429
    batch_worker: bool = True
    public_docs: bool = False               # with a key: /docs, /redoc and /openapi.json open too
    auth_failures: int = 10                 # wrong keys or logins per address and window, then 429
    auth_window: float = 60.0               # seconds
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, api_key: str | None = None) -> "ApiSettings":
        return cls(api_key=api_key or os.environ.get("BRUSHPEN_API_KEY") or None,
                   max_body_bytes=_env_int("BRUSHPEN_API_MAX_BODY", cls.max_body_bytes),
                   max_upload_bytes=_env_int("BRUSHPEN_API_MAX_UPLOAD", cls.max_upload_bytes),
                   running=_env_int("BRUSHPEN_API_CONCURRENCY", cls.running),
                   waiting=_env_int("BRUSHPEN_API_QUEUE", cls.waiting),
                   public_docs=os.environ.get("BRUSHPEN_PUBLIC_DOCS", "").lower() in ("1", "true", "yes"),
                   auth_failures=_env_int("BRUSHPEN_AUTH_FAILURES", cls.auth_failures),
                   auth_window=float(_env_int("BRUSHPEN_AUTH_WINDOW", int(cls.auth_window))))


def _warm_imports() -> None:
    for module in ("brushpen.generators.images", "brushpen.gan.pipeline", "brushpen.generators.copy"):
        try:
            importlib.import_module(module)
        except Exception:   # the request that needs it will report the problem properly
            logging.getLogger("brushpen.api").debug("warm import of %s failed", module, exc_info=True)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    jobs = JobStore()
    worker = Worker(jobs, functools.partial(service.run_line, jobs=jobs), handlers.status_error_body)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.batch_worker:
            worker.start()
        # Import the services' libraries (torch, diffusers, transformers: seconds) in the background,
        # so /health answers at once and the first real request finds them ready. No weights load here.
        threading.Thread(target=_warm_imports, name="brushpen-warm-imports", daemon=True).start()
        yield
        if settings.batch_worker:
            worker.stop()

    # With a key set, the schema is behind the key too and the docs pages are off (a browser cannot
    # send the bearer header), unless BRUSHPEN_PUBLIC_DOCS=1: only /health and the login page are open.
    docs_open = not settings.api_key or settings.public_docs
    app = FastAPI(title="brushpen", version=brushpen.__version__, lifespan=lifespan,
                  description="Images and marketing copy in OpenAI's API shapes, plus batch jobs. "
                              "With an API key set, /v1 routes need `Authorization: Bearer KEY`.",
                  docs_url="/docs" if docs_open else None, redoc_url="/redoc" if docs_open else None,
                  openapi_url="/openapi.json" if docs_open else None)
    app.state.api_key = settings.api_key
    app.state.failed_auth = FailedAuth(settings.auth_failures, settings.auth_window)
    app.state.queue = WorkQueue(settings.running, settings.waiting)
    app.state.jobs = jobs
    app.state.worker = worker
    app.state.settings = settings
    handlers.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, upload_bytes=settings.max_upload_bytes,
                       upload_prefixes=("/v1/files", "/v1/detections"))
    app.add_middleware(handlers.CatchAll)   # added last, so outermost of ours

    @app.get("/health", tags=["health"], summary="Liveness: open without the API key", response_model=Health)
    async def health(queue: Queue) -> dict:
        return {"status": "ok", "version": brushpen.__version__, "auth": bool(settings.api_key),
                "queue": {"inflight": queue.inflight, "running": queue.running, "waiting": queue.waiting}}

    if not docs_open:
        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_key)])
        async def openapi_behind_the_key() -> dict:
            return app.openapi()

    errors = {"4XX": {"model": ErrorResponse, "description": "A bad request, a missing or wrong key, an unknown "
                                                               "model or id, a full queue: OpenAI's error body"}}
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=errors)
    for module in (routes_models, routes_images, routes_text, routes_batches, routes_detect, routes_finetune):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(routes_images.public)
    app.include_router(metrics.router, responses=errors)
    # Any other /v1 path is still ours, not the UI's mounted below: behind the key, OpenAI's 404 shape.
    fallback = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @fallback.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_endpoint(path: str, request: Request) -> None:
        # A known path with another method is a 405 naming the methods it takes, not a 404.
        allowed = sorted({method.upper() for template, ops in request.app.openapi()["paths"].items()
                          if compile_path(template)[0].match(request.url.path) for method in ops})
        if allowed:
            raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
        raise HTTPException(404, f"no such endpoint: /v1/{path[:200]}")

    app.include_router(fallback)
    return app
