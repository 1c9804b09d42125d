"""`POST /v1/images/generations` and the PNG links it hands out for `response_format: url`.

A link is `/images/TOKEN.png` with a random 128-bit token: like OpenAI's signed URLs it works
without the API key (so a browser or <img> tag can open it) and expires, here after an hour.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from brushpen.api import service
from brushpen.api.deps import Queue
from brushpen.api.responses import ErrorResponse, ImagesResponse
from brushpen.api.schemas import ImageGenerationRequest
from brushpen.config import get_settings
from brushpen.generators.jobs import shared_outputs
from brushpen.store import atomic_write_bytes

router = APIRouter(tags=["images"])
public = APIRouter(tags=["images"])
URL_TTL_S = 3600
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def image_dir() -> Path:
    """Where linked PNGs live: the folder replicas share (`BRUSHPEN_OUTPUTS`), so a link works on
    whichever replica the load balancer sends the browser to; else under `$BRUSHPEN_HOME`."""
    shared = shared_outputs()
    return shared / "images" if shared is not None else get_settings().home / "api" / "images"


def save_png(data: bytes) -> str:
    """Store a PNG for its link; returns the token. Old links are swept on the way."""
    folder = image_dir()
    if folder.is_dir():
        cutoff = time.time() - URL_TTL_S
        for old in folder.glob("*.png"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except FileNotFoundError:   # another request swept it first
                pass
    token = secrets.token_urlsafe(16)
    atomic_write_bytes(folder / f"{token}.png", data)
    return token


@router.post("/images/generations", summary="Generate images (OpenAI's shape, plus seed, truncation_psi, ...)",
             response_model=ImagesResponse, response_model_exclude_unset=True)
async def generate(body: ImageGenerationRequest, request: Request, queue: Queue) -> dict:
    base = str(request.base_url).rstrip("/")   # the links are absolute, on the host the client called

    def url_for(png: bytes) -> str:
        return f"{base}/images/{save_png(png)}.png"

    return await queue.run(service.run_images, body, url_for)


@public.get("/images/{token}.png", summary="A generated PNG, by the link /v1/images/generations returned",
            response_class=FileResponse, responses={
                200: {"description": "The PNG", "content": {"image/png": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}},
                404: {"model": ErrorResponse, "description": "No such image, or its link has expired"}})
async def image_file(token: str) -> FileResponse:
    path = image_dir() / f"{token}.png"
    if not _TOKEN.match(token) or not path.is_file() or path.stat().st_mtime < time.time() - URL_TTL_S:
        raise HTTPException(404, "no such image, or its link has expired")
    return FileResponse(path, media_type="image/png")
