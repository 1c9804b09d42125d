"""Copy on an engine you already run: any server that speaks OpenAI's chat completions API.

llama.cpp's `llama-server`, vLLM, Ollama, text-generation-webui and `transformers serve` all do. Set
`BRUSHPEN_ENGINE_URL` to its API root (`http://127.0.0.1:8080/v1`; `BRUSHPEN_ENGINE_KEY` when it
wants a key), and every model it lists becomes a copy model named `engine/ID`, in the CLI, the API,
the studio and batch jobs. A bigger model than the laptop's default lives there; brushpen keeps its
own part: the prompts, deliberate mode's checks and pick, the blocklist, streaming, history and
Content Credentials.

Each draft is one chat request with its own seed, `n=1`: many engines ignore `n`, and a seed per
draft lets an engine that honours seeds (llama.cpp, vLLM) repeat a result. Up to
`BRUSHPEN_ENGINE_CONCURRENCY` requests run at once, which engines with parallel slots batch. Only
OpenAI's own sampling fields are sent (temperature, top_p, max_tokens, seed, stop); top-k and the
repetition penalty are the engine's settings. The engine applies its own chat template, so the
answer is not prefilled with the kind's label; `sampling.clean` strips a label the model writes.
Stops and the single-line cut are applied here as well as sent, so every engine ends copy alike.

The HTTP client is the `openai` package; its errors become ours: an engine that cannot be reached
or fails is `EngineUnavailable` (502), a model it does not serve is `ModelNotFound`, a request it
refuses is `BadParameter` with the engine's message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from queue import Empty, Queue
from typing import Any, Iterator
from urllib.parse import urlsplit

from brushpen.config import ENGINE_URL_ENV as URL_ENV
from brushpen.config import engine_url
from brushpen.errors import BadParameter, EngineUnavailable, ModelNotFound
from brushpen.text.sampling import RawText, Row, Sampling, stop_index

log = logging.getLogger(__name__)

KEY_ENV = "BRUSHPEN_ENGINE_KEY"
CONCURRENCY_ENV = "BRUSHPEN_ENGINE_CONCURRENCY"
PREFIX = "engine/"
TIMEOUT_S = 120.0          # one request; a long description on a slow CPU engine takes a while
LIST_TIMEOUT_S = 3.0       # listing the models for a picker must not hang the studio
LIST_TTL_S = 10.0
MAX_ENGINE_STOPS = 4       # OpenAI's limit on `stop`


def is_engine_ref(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def describe(url: str) -> str:
    """The URL without credentials or query, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclass(frozen=True)
class EngineModel:
    """A copy model served by an engine; `name` is what results report (`engine/ID`)."""

    name: str
    model_id: str
    url: str

    @property
    def path(self) -> str:   # what requests sharing a model are grouped by
        return f"{self.url}#{self.model_id}"


def load_engine_model(name: str) -> EngineModel:
    url = engine_url()
    if url is None:
        raise BadParameter(f"'{name}' is a model of an engine, and no engine is set: set {URL_ENV} (or pass "
                           f"--engine URL) to the API root of an OpenAI-compatible server, e.g. "
                           f"http://127.0.0.1:8080/v1")
    model_id = name[len(PREFIX):]
    if not model_id.strip():
        raise BadParameter(f"name the engine's model after '{PREFIX}', e.g. {PREFIX}qwen2.5-7b-instruct")
    return EngineModel(name, model_id, url)


@lru_cache(maxsize=8)
def _client(url: str, key: str):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key or "not-needed", timeout=TIMEOUT_S, max_retries=1)


def client(url: str):
    return _client(url, os.environ.get(KEY_ENV, ""))


_listing: dict[str, tuple[float, list[str]]] = {}
_listing_lock = threading.Lock()


def list_engine_models() -> list[str]:
    """`engine/ID` for every model the engine lists, for pickers and the catalog; [] when no engine
    is set or it cannot be reached (logged), so a stopped engine never breaks a listing."""
    try:
        url = engine_url()
    except BadParameter as e:
        log.warning("%s", e)
        return []
    if url is None:
        return []
    with _listing_lock:
        at, names = _listing.get(url, (0.0, []))
        if time.monotonic() - at < LIST_TTL_S:
            return names
    try:
        return _fetch(url)
    except Exception as e:  # any failure: list nothing from it
        log.warning("the copy engine at %s lists no models: %s", describe(url), _why(e))
        with _listing_lock:
            _listing[url] = (time.monotonic(), [])
        return []


def _fetch(url: str) -> list[str]:
    models = client(url).with_options(timeout=LIST_TIMEOUT_S, max_retries=0).models.list()
    names = [PREFIX + m.id for m in models.data]
    with _listing_lock:
        _listing[url] = (time.monotonic(), names)
    return names


def check_served(name: str) -> str:
    """`name` when the engine lists it now (the API's check of a client's model name); otherwise
    ModelNotFound, or EngineUnavailable when the engine cannot say."""
    url = engine_url()
    if url is None:
        raise ModelNotFound(f"'{name}' is a model of an engine, and none is set here ({URL_ENV} or --engine)")
    with _listing_lock:
        at, names = _listing.get(url, (0.0, []))
    if time.monotonic() - at < LIST_TTL_S and name in names:
        return name
    try:
        names = _fetch(url)
    except Exception as e:
        raise _translate(e, EngineModel(name, name[len(PREFIX):], url)) from None
    if name not in names:
        raise ModelNotFound(f"the engine at {describe(url)} does not serve '{name[len(PREFIX):]}'; it serves: "
                            f"{', '.join(names) or 'nothing'}")
    return name


def _why(e: Exception) -> str:
    return (getattr(e, "message", None) or str(e) or type(e).__name__)[:300]


def _translate(e: Exception, em: EngineModel) -> Exception:
    """The openai client's error as one of ours, with the engine's own words."""
    import openai

    where = describe(em.url)
    if isinstance(e, (openai.APIConnectionError, openai.APITimeoutError)):
        return EngineUnavailable(f"the copy engine at {where} cannot be reached: {_why(e)}")
    if isinstance(e, openai.NotFoundError):
        return ModelNotFound(f"the engine at {where} has no model '{em.model_id}': {_why(e)}")
    if isinstance(e, openai.APIStatusError) and e.status_code < 500:
        return BadParameter(f"the engine at {where} refused the request ({e.status_code}): {_why(e)}")
    if isinstance(e, openai.APIError):
        return EngineUnavailable(f"the copy engine at {where} failed: {_why(e)}")
    return e


def _body(em: EngineModel, row: Row, s: Sampling) -> dict:
    body: dict[str, Any] = {"model": em.model_id, "messages": json.loads(row.prompt), "n": 1,
                            "max_tokens": s.max_new_tokens, "temperature": s.temperature, "seed": row.seed}
    if s.temperature > 0:
        body["top_p"] = s.top_p
    stops = [x for x in row.stops if x][:MAX_ENGINE_STOPS]
    if stops:
        body["stop"] = stops
    return body


def _finish(text: str, row: Row, finish_reason: str | None) -> RawText:
    cut = stop_index(text, row)
    if cut is not None:
        return RawText(text[:cut], True)
    return RawText(text, finish_reason not in ("length", None))


def _one(em: EngineModel, row: Row, s: Sampling) -> RawText:
    try:
        resp = client(em.url).chat.completions.create(**_body(em, row, s))
    except Exception as e:
        raise _translate(e, em) from None
    if not resp.choices:
        raise EngineUnavailable(f"the copy engine at {describe(em.url)} answered with no choices")
    choice = resp.choices[0]
    return _finish(choice.message.content or "", row, choice.finish_reason)


def _concurrency() -> int:
    try:
        return max(1, min(64, int(os.environ.get(CONCURRENCY_ENV, "4"))))
    except ValueError:
        raise BadParameter(f"{CONCURRENCY_ENV} must be a whole number of requests, 1 to 64") from None


def generate_rows(em: EngineModel, rows: list[Row], s: Sampling,
                  cancel: threading.Event | None = None) -> list[RawText]:
    """Every row as its own chat request, `BRUSHPEN_ENGINE_CONCURRENCY` at a time, in row order.
    Once `cancel` is set, rows not yet sent come back empty and unended."""
    def run(row: Row) -> RawText:
        if cancel is not None and cancel.is_set():
            return RawText("", False)
        return _one(em, row, s)

    with ThreadPoolExecutor(max_workers=min(_concurrency(), max(1, len(rows))),
                            thread_name_prefix="brushpen-engine") as pool:
        return list(pool.map(run, rows))


def stream_rows(em: EngineModel, rows: list[Row], s: Sampling,
                cancel: threading.Event | None = None) -> Iterator[tuple]:
    """As `sampling.stream_rows`: (row, raw text so far, ended) while the engine streams, then
    (-1, list[RawText]). Closing the iterator or setting `cancel` closes every open stream."""
    cancel = cancel if cancel is not None else threading.Event()
    failed = threading.Event()   # one stream failed: the others stop too
    queue: Queue = Queue()
    results: list[RawText | None] = [None] * len(rows)
    errors: list[BaseException] = []

    def run(i: int, row: Row) -> None:
        text, reason = "", None
        try:
            if cancel.is_set() or failed.is_set():
                return
            stream = client(em.url).chat.completions.create(**_body(em, row, s), stream=True)
            with stream:
                for chunk in stream:
                    if cancel.is_set() or failed.is_set():
                        return
                    if not chunk.choices:
                        continue
                    text += chunk.choices[0].delta.content or ""
                    reason = chunk.choices[0].finish_reason or reason
                    if stop_index(text, row) is not None:
                        break
                    queue.put((i, text, False))
            results[i] = _finish(text, row, reason if stop_index(text, row) is None else "stop")
            queue.put((i, results[i].text, True))
        except Exception as e:
            errors.append(_translate(e, em))
            failed.set()

    with ThreadPoolExecutor(max_workers=min(_concurrency(), max(1, len(rows))),
                            thread_name_prefix="brushpen-engine-stream") as pool:
        futures = [pool.submit(run, i, row) for i, row in enumerate(rows)]
        try:
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    item = queue.get(timeout=0.05)
                except Empty:   # look at the futures again
                    continue
                yield item
        except GeneratorExit:
            cancel.set()
            raise
    if errors:
        raise errors[0]
    if cancel.is_set():
        return
    yield -1, [r if r is not None else RawText("", False) for r in results]
