"""`POST /v1/detections`: the deepfake checker over HTTP (`brushpen.generators.checker.check_images`).

Two ways to send images, up to `MAX_IMAGES` per call, each at most `MAX_IMAGE_BYTES`:
- multipart/form-data: one or more `file` parts (form fields `model`, `heatmaps`, `backend` optional);
- JSON: `{"images": [{"name": "a.png", "b64_json": "..."}], "model": "detector", "heatmaps": false,
  "backend": "torch"}`. `backend` is `torch`, `onnx`, `onnx-int8` or `student` (the last three once
  `brushpen export detector` made them); an unknown or unavailable one is a 400 saying which exist.
The whole body is capped by the server's upload limit (`BRUSHPEN_API_MAX_UPLOAD`, 413 beyond).
A bad image (not base64, not an image, truncated, a decompression bomb) gets its own `error` in the
result and the others are still checked; a malformed request is a 400, an unknown model a 404.
Response: `{"object": "list", "model", "backend", "data": [CheckResult + `heatmap_b64` when asked], "summary"}`.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.datastructures import UploadFile

from brushpen.api.schemas import StoreRef
from brushpen.errors import BadInput, BadParameter
from brushpen.store import store_ref_problem

# The checker (torch, the model) is imported on the first request, so the server still starts fast.
DEFAULT_MODEL = "detector"

router = APIRouter(tags=["detections"])
MAX_IMAGES = 64
MAX_IMAGE_BYTES = 8 << 20
_B64_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 4


class DetectionImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=512, description="shown back as the result's `path`")
    b64_json: str = Field(..., max_length=_B64_CHARS, description="the image file, base64-encoded")


class DetectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[DetectionImage] = Field(..., min_length=1, max_length=MAX_IMAGES)
    model: StoreRef = Field(DEFAULT_MODEL, max_length=200,
                       description="a detector in the store (safety/NAME), or BASE:ADAPTER for one with a LoRA "
                                   "adapter (`detector:NAME`, made by `brushpen finetune detector`)")
    heatmaps: StrictBool = Field(False, description="also return a heatmap overlay PNG per image, base64")
    backend: str = Field("torch", max_length=40,
                         description="torch, or an edge variant made by `brushpen export detector`: onnx, "
                                     "onnx-int8, student (unknown or not exported: 400)")
    scope_gate: StrictBool = Field(True, description="answer `out-of-scope` (score null, `scope` says why) for images "
                                               "that are not photographs (emoji, drawings, text); false scores "
                                               "them anyway")


_MULTIPART_SCHEMA = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": MAX_IMAGES},
    "model": {"type": "string"}, "heatmaps": {"type": "boolean"}, "backend": {"type": "string"},
    "scope_gate": {"type": "boolean", "default": True}}}


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        return None


Items = list[tuple[str, bytes | None, str | None]]


def _flag(value: object, default: bool) -> bool:
    text = str(value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"expected true or false, got {text[:40]!r}")


async def _read_multipart(request: Request) -> tuple[Items, str, bool, str, bool]:
    form = await request.form(max_files=MAX_IMAGES + 1)
    parts = [p for p in form.getlist("file") if isinstance(p, UploadFile)]
    if not parts:
        raise BadInput("send the images as one or more multipart `file` parts")
    if len(parts) > MAX_IMAGES:
        raise BadInput(f"at most {MAX_IMAGES} images per request, got {len(parts)}")
    items = []
    for i, part in enumerate(parts):
        data = await part.read(MAX_IMAGE_BYTES + 1)
        name = part.filename or f"image-{i}"
        items.append((name, None, f"image is larger than {MAX_IMAGE_BYTES:,} bytes")
                     if len(data) > MAX_IMAGE_BYTES else (name, data, None))
    model = str(form.get("model") or DEFAULT_MODEL)
    problem = store_ref_problem(model)
    if problem:
        raise BadParameter(problem)
    heatmaps = _flag(form.get("heatmaps"), False)
    return items, model, heatmaps, str(form.get("backend") or "torch"), _flag(form.get("scope_gate"), True)


def _read_json(raw: bytes) -> tuple[Items, str, bool, str, bool]:
    try:
        body = DetectionRequest.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from e
    items = []
    for i, img in enumerate(body.images):
        data = _decode_b64(img.b64_json)
        name = img.name or f"image-{i}"
        if data is None:
            items.append((name, None, "b64_json is not valid base64"))
        elif len(data) > MAX_IMAGE_BYTES:
            items.append((name, None, f"image is larger than {MAX_IMAGE_BYTES:,} bytes"))
        else:
            items.append((name, data, None))
    return items, body.model, body.heatmaps, body.backend, body.scope_gate


def _check(items: Items, model: str, heatmaps: bool, backend: str = "torch", scope_gate: bool = True) -> dict:
    from brushpen.generators import checker

    good = [(n, d) for n, d, err in items if err is None and d is not None]
    checked = iter(checker.check_images(good, model, heatmaps, backend=backend, scope_gate=scope_gate))
    results = [checker.CheckResult(path=n, error=err) if err is not None else next(checked) for n, _, err in items]
    data = []
    for r in results:
        row = r.to_json()
        if heatmaps:
            row["heatmap_b64"] = base64.b64encode(r.heatmap_png).decode() if r.heatmap_png else None
        data.append(row)
    return {"object": "list", "model": model, "backend": backend, "data": data,
            "summary": checker.summarize(results)}


@router.post("/detections", summary="Check images for AI generation: score, verdict, heatmap, provenance",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": DetectionRequest.model_json_schema()},
                 "multipart/form-data": {"schema": _MULTIPART_SCHEMA}}}})
async def detections(request: Request) -> dict:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        items, model, heatmaps, backend, scope_gate = await _read_multipart(request)
    else:
        items, model, heatmaps, backend, scope_gate = _read_json(await request.body())
    return await request.app.state.queue.run(_check, items, model, heatmaps, backend, scope_gate)
