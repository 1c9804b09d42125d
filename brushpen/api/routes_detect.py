"""`POST /v1/detections`: the deepfake checker over HTTP (`brushpen.generators.checker.check_images`).

Two ways to send images, up to `MAX_IMAGES` per call, each at most `MAX_IMAGE_BYTES`:
- multipart/form-data: one or more `file` parts, and the optional form fields of `DetectionForm`
  (`model`, `heatmaps`, `backend`, `scope_gate`, as text);
- JSON: `{"images": [{"name": "a.png", "b64_json": "..."}], "model": "detector", "heatmaps": false,
  "backend": "torch"}`. `backend` is `torch`, `onnx`, `onnx-int8` or `student` (the last three once
  `brushpen export detector` made them); an unknown or unavailable one is a 400 saying which exist.
The whole body is capped by the server's upload limit (`BRUSHPEN_API_MAX_UPLOAD`, 413 beyond).
A bad image (not base64, not an image, truncated, a decompression bomb) gets its own `error` in the
result and the others are still checked; a malformed request is a 400, an unknown model a 404.
Response: `DetectionResponse`, `{"object": "list", "model", "backend", "data": [CheckResult + `heatmap_b64`
when asked], "summary"}`.

`POST /v1/credentials` takes the same body and reads provenance only, without the detector: per image
its Content Credentials (recovered through our watermark when the file lost them), the watermark and
the evidence of AI generation (`CredentialsResponse`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from pydantic_core import PydanticUseDefault
from starlette.datastructures import UploadFile

from brushpen.api.deps import Queue
from brushpen.api.responses import CredentialsResponse, DetectionResponse
from brushpen.api.schemas import StoreRef
from brushpen.errors import BadInput
from brushpen.families import default_model

# The checker (torch, the model) is imported on the first request, so the server still starts fast.
DEFAULT_MODEL = default_model("safety")

router = APIRouter(tags=["detections"])
MAX_IMAGES = 64
MAX_IMAGE_BYTES = 8 << 20
_B64_CHARS = MAX_IMAGE_BYTES * 4 // 3 + 4
T = TypeVar("T")


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


def _form_value(value: Any) -> Any:
    """A form field left empty takes its default, as an absent one does."""
    if value is None or value == "":
        raise PydanticUseDefault()
    return value


def _form_flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text[:40]!r}")


_JSON = DetectionRequest.model_fields   # the form's fields mean what the JSON body's do


FormText = Annotated[StoreRef, BeforeValidator(_form_value)]
# Before-validators run last-listed first: an empty field takes the default before it is read as a flag.
FormFlag = Annotated[bool, BeforeValidator(_form_flag), BeforeValidator(_form_value)]


class DetectionForm(BaseModel):
    """The multipart form's fields beside its `file` parts: the JSON body's options, sent as text."""

    model_config = ConfigDict(extra="ignore")   # as before: a form field we do not know is not read
    model: FormText = Field(DEFAULT_MODEL, max_length=200, description=_JSON["model"].description)
    heatmaps: FormFlag = Field(False, description=_JSON["heatmaps"].description)
    backend: Annotated[str, BeforeValidator(_form_value)] = Field("torch", max_length=40,
                                                                  description=_JSON["backend"].description)
    scope_gate: FormFlag = Field(True, description=_JSON["scope_gate"].description)


_FORM_SCHEMA = DetectionForm.model_json_schema()
_MULTIPART_SCHEMA = {**_FORM_SCHEMA, "required": ["file"], "properties": {
    "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": MAX_IMAGES},
    **_FORM_SCHEMA["properties"]}}


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass
class DetectionInput:
    """A request's images, from either body: (name, bytes, None), or (name, None, why unreadable)."""

    items: list[tuple[str, bytes | None, str | None]]
    model: str
    heatmaps: bool
    backend: str
    scope_gate: bool


def _validated(parse: Callable[[], T]) -> T:
    try:
        return parse()
    except ValidationError as e:   # answered as FastAPI answers a declared body: a 400 naming the field
        raise RequestValidationError(e.errors(include_url=False)) from e


async def _read_multipart(request: Request) -> DetectionInput:
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
    fields = {k: v for k, v in form.items() if k != "file"}
    opts = _validated(lambda: DetectionForm.model_validate(fields))
    return DetectionInput(items, opts.model, opts.heatmaps, opts.backend, opts.scope_gate)


def _read_json(raw: bytes) -> DetectionInput:
    body = _validated(lambda: DetectionRequest.model_validate_json(raw or b"{}"))
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
    return DetectionInput(items, body.model, body.heatmaps, body.backend, body.scope_gate)


async def read_detections(request: Request) -> DetectionInput:
    """The body, JSON (`DetectionRequest`) or multipart (`file` parts and `DetectionForm`'s fields).

    FastAPI declares one body per route, a model or form fields, never either; so this dependency
    picks by content type and validates with the same pydantic models the schema shows."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _read_multipart(request)
    return _read_json(await request.body())


def _check(inp: DetectionInput) -> dict:
    from brushpen.generators import checker

    good = [(n, d) for n, d, err in inp.items if err is None and d is not None]
    checked = iter(checker.check_images(good, inp.model, inp.heatmaps, backend=inp.backend,
                                        scope_gate=inp.scope_gate))
    results = [checker.CheckResult(path=n, error=err) if err is not None else next(checked)
               for n, _, err in inp.items]
    data = []
    for r in results:
        row = r.to_json()
        if inp.heatmaps:
            row["heatmap_b64"] = base64.b64encode(r.heatmap_png).decode() if r.heatmap_png else None
        data.append(row)
    return {"object": "list", "model": inp.model, "backend": inp.backend, "data": data,
            "summary": checker.summarize(results)}


@router.post("/detections", summary="Check images for AI generation: score, verdict, heatmap, provenance",
             response_model=DetectionResponse, response_model_exclude_unset=True,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": DetectionRequest.model_json_schema()},
                 "multipart/form-data": {"schema": _MULTIPART_SCHEMA}}}})
async def detections(inp: Annotated[DetectionInput, Depends(read_detections)], queue: Queue) -> dict:
    return await queue.run(_check, inp)


def _read_credentials(inp: DetectionInput) -> dict:
    from brushpen.generators import checker

    good = [(n, d) for n, d, err in inp.items if err is None and d is not None]
    read = iter(checker.read_credentials(good))
    data = [{"path": n, "credentials": None, "watermark": None, "evidence": [], "error": err} if err is not None
            else next(read) for n, _, err in inp.items]
    return {"object": "list", "data": data}


@router.post("/credentials", summary="Read images' Content Credentials (C2PA) and watermark, without the detector",
             response_model=CredentialsResponse,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": DetectionRequest.model_json_schema()},
                 "multipart/form-data": {"schema": _MULTIPART_SCHEMA}}}})
async def credentials(inp: Annotated[DetectionInput, Depends(read_detections)], queue: Queue) -> dict:
    return await queue.run(_read_credentials, inp)
