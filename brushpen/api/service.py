"""The API's calls into the generator services: a validated request body in, an OpenAI-shaped body out.

This module only translates. The routes and the batch worker both come through here, so a batch
line runs exactly as the same request would over HTTP. Model names are checked against the
catalog (`generators.catalog`) first: the services also accept folder paths, which a remote
client must never be able to point at. Service requests are built from a body by field name
(`generators.requests.from_values`), not field by field.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable, Iterator

from pydantic import BaseModel, ValidationError

import brushpen
from brushpen.api.handlers import error_body, user_error, validation_error_body
from brushpen.api.schemas import ChatCompletionRequest, CompletionRequest, ImageGenerationRequest
from brushpen.errors import BadParameter, BrushpenError, EngineUnavailable
from brushpen.generators import finetune_jobs
from brushpen.generators.catalog import CatalogModel, catalog, copy_model, image_model, lookup
from brushpen.generators.jobs import JobStore
from brushpen.generators.requests import from_values
from brushpen.store import scrub_paths

if TYPE_CHECKING:
    from brushpen.generators.copy import CopyRequest, CopyResult

# The image and copy services (torch, diffusers, transformers) are imported on first use, in the
# functions below, so the server starts fast.

FINGERPRINT = f"brushpen-{brushpen.__version__}"
# What a batch line may run: its url, and the body that url takes.
BATCH_SCHEMAS: dict[str, type[BaseModel]] = {"/v1/images/generations": ImageGenerationRequest,
                                             "/v1/completions": CompletionRequest,
                                             "/v1/chat/completions": ChatCompletionRequest}
BATCH_ENDPOINTS = tuple(BATCH_SCHEMAS)


# ---- models -------------------------------------------------------------------------------------

def model_object(m: CatalogModel) -> dict:
    """OpenAI's model object, with the catalog's details that apply to the model's kind."""
    return {"object": "model", "owned_by": "brushpen", **{k: v for k, v in asdict(m).items() if v is not None}}


def list_models() -> dict:
    cat = catalog(refresh=True)
    return {"object": "list", "data": [model_object(m) for m in [*cat.images.values(), *cat.copy.values()]]}


def get_model(name: str) -> dict:
    return model_object(lookup(name))


# ---- images -------------------------------------------------------------------------------------

def run_images(body: ImageGenerationRequest, save_png: Callable[[bytes], str] | None = None) -> dict:
    """OpenAI's ImagesResponse; `save_png` stores a PNG and returns its URL (response_format=url)."""
    from brushpen.generators.images import ImageRequest, generate_images

    width, height = body.dimensions()
    req = from_values(ImageRequest, {**body.model_dump(), "model": image_model(body.model),
                                     "width": width, "height": height})
    images = generate_images(req)
    data = []
    for img in images:
        png = img.png_bytes()
        if body.response_format == "url":
            if save_png is None:
                raise BadParameter("response_format 'url' is not available here: use b64_json")
            data.append({"url": save_png(png), "revised_prompt": body.prompt})
        else:
            data.append({"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": body.prompt})
    first = images[0].settings
    return {"created": int(time.time()), "data": data, "output_format": "png", "background": "opaque",
            "size": f"{first['width']}x{first['height']}"}


# ---- copy ---------------------------------------------------------------------------------------

def copy_request(body: CompletionRequest | ChatCompletionRequest, brief: str, max_tokens: int | None) -> CopyRequest:
    from brushpen.generators.copy import CopyRequest

    # Unset knobs (None) keep the copywriter's tuned defaults (docs/cli.md, "Copy"), not OpenAI's.
    return from_values(CopyRequest, {**body.model_dump(), "brief": brief, "model": copy_model(body.model, body.backend),
                                     "stop": body.stops(), "max_new_tokens": max_tokens, "lang": body.language},
                       skip_none=True)


def _choices(req: CopyRequest, result: CopyResult, offset: int, chat: bool) -> list[dict]:
    from brushpen.generators.copy import hit_token_cap

    base = result.settings["seed"]
    out = []
    for position, v in enumerate(result.variants):
        # The variant's slot, also after a redraw; deliberate mode returns its picks best first.
        index = offset + (position if req.deliberate else (v.seed - base) % req.n)
        finish = "length" if hit_token_cap(req, v.text) else "stop"
        choice = {"index": index, "logprobs": None, "finish_reason": finish}
        if v.checks is not None:
            choice["checks"] = v.checks   # our extension: each check's verdict, as `brushpen copy --json`
        if chat:
            choice["message"] = {"role": "assistant", "content": v.text, "refusal": None}
        else:
            choice["text"] = v.text
        out.append(choice)
    return out


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _copy_response(reqs: list[CopyRequest], results: list[CopyResult], label: str, chat: bool) -> dict:
    from brushpen.generators.copy import count_tokens, prompt_tokens

    choices, notes = [], []
    for p, (req, result) in enumerate(zip(reqs, results)):
        choices += _choices(req, result, p * req.n, chat)
        notes += result.notes
    completion = sum(count_tokens(reqs[0].model, c["message"]["content"] if chat else c["text"]) for c in choices)
    out = {"id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
           "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
           "model": label, "system_fingerprint": FINGERPRINT,
           "choices": sorted(choices, key=lambda c: c["index"]),
           "usage": _usage(sum(prompt_tokens(r) for r in reqs), completion)}
    if notes:
        out["notes"] = notes   # variants dropped after redraws, and why
    return out


def run_completion(body: CompletionRequest) -> dict:
    from brushpen.generators.copy import generate_copy_batch

    reqs = [copy_request(body, b, body.max_tokens) for b in body.briefs()]
    return _copy_response(reqs, generate_copy_batch(reqs), reqs[0].model, chat=False)


def run_chat(body: ChatCompletionRequest) -> dict:
    from brushpen.generators.copy import generate_copy

    req = copy_request(body, body.brief(), body.token_cap())
    return _copy_response([req], [generate_copy(req)], req.model, chat=True)


def check_copy(req: CopyRequest) -> None:
    """Everything that can refuse a copy request, run before a stream's headers go out (an ONNX
    backend the model was never exported to loads its graph here)."""
    from brushpen.generators.copy import check_backend_available, check_request

    check_request(req)
    check_backend_available(req)


def stream_chunks(req: CopyRequest, chat: bool, include_usage: bool,
                  cancel: threading.Event | None = None) -> Iterator[dict]:
    """OpenAI stream chunks for one brief, from `stream_copy`'s events; choices[].index is the variant.

    OpenAI streams only append. When a variant is redrawn or trimmed after some of it was sent, the
    chunk carries our extension `"replace": FULL_TEXT` (and `""` as its text); a dropped variant
    ends with finish_reason `content_filter` and `"dropped": true`. A client that applies these gets
    exactly the non-streamed result.
    """
    from brushpen.generators.copy import count_tokens, prompt_tokens, stream_copy

    cid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    head = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": req.model, "system_fingerprint": FINGERPRINT}

    def chunk(index: int, text: str | None, finish: str | None = None, **extra) -> dict:
        choice = {"index": index, "logprobs": None, "finish_reason": finish, **extra}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        return {**head, "choices": [choice]}

    if chat:
        for i in range(req.n):
            yield {**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
    result = None
    for ev in stream_copy(req, cancel):
        if ev.kind == "delta" and ev.text:
            yield chunk(ev.variant, ev.text)
        elif ev.kind == "replace":
            yield chunk(ev.variant, "", replace=ev.text)
        elif ev.kind == "drop":
            yield chunk(ev.variant, None if chat else "", "content_filter", dropped=True)
        elif ev.kind == "done":
            result = ev.result
    if result is None:   # cancelled: the client is gone, nothing more to send
        return
    choices = _choices(req, result, 0, chat)
    for c in sorted(choices, key=lambda c: c["index"]):
        yield chunk(c["index"], None if chat else "", c["finish_reason"])
    if include_usage:
        completion = sum(count_tokens(req.model, v.text) for v in result.variants)
        yield {**head, "choices": [], "usage": _usage(prompt_tokens(req), completion)}


# ---- batch lines --------------------------------------------------------------------------------

def run_line(endpoint: str, body: dict, jobs: JobStore | None = None) -> tuple[int, dict]:
    """One batch line: (status code, response body), as the same request over HTTP would give.

    A fine-tuning job is a one-line batch too; it needs `jobs`, where it writes its progress events.
    """
    try:
        return _run_line(endpoint, body, jobs)
    except EngineUnavailable:
        raise   # the worker waits for the engine and runs the line again (`worker.ENGINE_WAIT_S`)
    except BrushpenError as e:   # as over HTTP, but an output file never shows a server path
        return user_error(e, scrub_paths(str(e)))


def _run_line(endpoint: str, body: dict, jobs: JobStore | None) -> tuple[int, dict]:
    if endpoint == finetune_jobs.ENDPOINT:
        return finetune_jobs.run_job(jobs, body)
    try:
        parsed = BATCH_SCHEMAS[endpoint].model_validate(body)
    except ValidationError as e:
        return 400, validation_error_body(e.errors())
    if getattr(parsed, "stream", False):
        return 400, error_body("stream is not available in a batch: the output file holds the results",
                               "invalid_request_error", "unsupported_parameter", "stream")
    if endpoint == "/v1/images/generations":
        if parsed.response_format == "url":
            return 400, error_body("response_format 'url' is not available in a batch: use b64_json, "
                                   "the output file holds the PNGs", "invalid_request_error",
                                   "unsupported_parameter", "response_format")
        return 200, run_images(parsed)
    if endpoint == "/v1/completions":
        return 200, run_completion(parsed)
    return 200, run_chat(parsed)
