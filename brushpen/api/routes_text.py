"""`POST /v1/completions` and `POST /v1/chat/completions`: the copywriter in OpenAI's shapes.

The prompt (or the last user message) is the brief; `kind`, `tone` and `audience` come as extras.
`stream: true` answers with server-sent events exactly as OpenAI does: `data: {chunk}` lines, one
blank line apart, ending `data: [DONE]`. Everything that can refuse a request runs before the
stream's headers go out, so a bad request is a plain 4xx, not a broken stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from brushpen.api import service
from brushpen.api.deps import Queue
from brushpen.api.handlers import error_body
from brushpen.api.limits import WorkQueue, run_blocking
from brushpen.api.responses import ChatCompletionResponse, CompletionResponse
from brushpen.api.schemas import ChatCompletionRequest, CompletionRequest
from brushpen.errors import BrushpenError

if TYPE_CHECKING:
    from brushpen.generators.copy import CopyRequest

router = APIRouter(tags=["copy"])
log = logging.getLogger("brushpen.api")


def _sse(what: str) -> dict:
    """The OpenAPI entry of a `stream: true` answer, which no response_model describes."""
    return {200: {"description": f"{what}; with `stream: true`, server-sent events: `data: CHUNK` lines "
                                 "(OpenAI's chunk objects) ending `data: [DONE]`",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


@router.post("/completions", summary="Copy for a brief (the prompt), OpenAI's completions shape",
             response_model=CompletionResponse, response_model_exclude_unset=True,
             responses=_sse("A text_completion"))
async def completions(body: CompletionRequest, queue: Queue) -> dict | StreamingResponse:
    if body.stream:
        req = await run_blocking(service.copy_request, body, body.briefs()[0], body.max_tokens)
        return await _stream(queue, req, chat=False, include_usage=_usage_wanted(body))
    return await queue.run(service.run_completion, body)


@router.post("/chat/completions", summary="Copy for a brief (the last user message), OpenAI's chat shape",
             response_model=ChatCompletionResponse, response_model_exclude_unset=True,
             responses=_sse("A chat.completion"))
async def chat_completions(body: ChatCompletionRequest, queue: Queue) -> dict | StreamingResponse:
    if body.stream:
        req = await run_blocking(service.copy_request, body, body.brief(), body.token_cap())
        return await _stream(queue, req, chat=True, include_usage=_usage_wanted(body))
    return await queue.run(service.run_chat, body)


def _usage_wanted(body: CompletionRequest | ChatCompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _stream(queue: WorkQueue, req: CopyRequest, chat: bool, include_usage: bool) -> StreamingResponse:
    queue.check()
    await run_blocking(service.check_copy, req)

    async def events() -> AsyncIterator[str]:
        # The slot is held until the generating thread has really ended, not until the client
        # leaves: a closed socket sets `cancel`, generation stops at its next decode step, and only
        # then is the slot given back, so abandoned streams cannot pile up past the limit.
        cancel = threading.Event()
        await queue.acquire()
        stream = _ThreadStream(lambda: service.stream_chunks(req, chat, include_usage, cancel), cancel,
                               on_end=queue.release)
        try:
            async for chunk in stream.items():
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        except BrushpenError as e:
            yield f"data: {json.dumps(error_body(str(e)))}\n\n"
            return
        except Exception as e:   # headers are out: report in-band, as OpenAI does, never a traceback
            log.exception("stream failed")
            yield f"data: {json.dumps(error_body(f'internal error ({type(e).__name__})', 'server_error'))}\n\n"
            return
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _ThreadStream:
    """A blocking iterator driven in its own thread, its items handed to the event loop as they come.

    When the consumer stops early (the client disconnected), `cancel` is set and the iterator is
    closed in its thread; `on_end` runs on the event loop once that thread has finished, whatever
    the way it ended.
    """

    def __init__(self, make: Callable[[], Iterator[dict]], cancel: threading.Event, on_end: Callable[[], None]):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel = cancel
        threading.Thread(target=self._pump, args=(make, on_end), name="brushpen-stream", daemon=True).start()

    def _post(self, fn: Callable, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the server shut down: nobody is listening
            pass

    def _pump(self, make: Callable[[], Iterator[dict]], on_end: Callable[[], None]) -> None:
        try:
            it = make()
            try:
                for item in it:
                    if self.cancel.is_set():
                        break
                    self._post(self.queue.put_nowait, ("item", item))
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()   # stops the generation inside and waits for it
            self._post(self.queue.put_nowait, ("end", None))
        except BaseException as e:  # handed to the event loop, raised there
            self._post(self.queue.put_nowait, ("error", e))
        finally:
            self._post(on_end)

    async def items(self) -> AsyncIterator[dict]:
        try:
            while True:
                kind, item = await self.queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            self.cancel.set()
