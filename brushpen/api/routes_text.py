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
from typing import AsyncIterator, Callable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from brushpen.api import service
from brushpen.api.handlers import error_body
from brushpen.api.limits import run_blocking
from brushpen.api.schemas import ChatCompletionRequest, CompletionRequest
from brushpen.errors import BrushpenError

router = APIRouter(tags=["copy"])
log = logging.getLogger("brushpen.api")


@router.post("/completions", summary="Copy for a brief (the prompt), OpenAI's completions shape")
async def completions(body: CompletionRequest, request: Request):
    if body.stream:
        req = await run_blocking(service.copy_request, body, body.briefs()[0], body.max_tokens)
        return await _stream(request, req, chat=False, include_usage=_usage_wanted(body))
    return await request.app.state.queue.run(service.run_completion, body)


@router.post("/chat/completions", summary="Copy for a brief (the last user message), OpenAI's chat shape")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    if body.stream:
        req = await run_blocking(service.copy_request, body, body.brief(), body.token_cap())
        return await _stream(request, req, chat=True, include_usage=_usage_wanted(body))
    return await request.app.state.queue.run(service.run_chat, body)


def _usage_wanted(body: CompletionRequest | ChatCompletionRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _stream(request: Request, req, chat: bool, include_usage: bool) -> StreamingResponse:
    queue = request.app.state.queue
    queue.check()
    await run_blocking(service.check_copy, req)
    from brushpen.generators.copy import check_backend_available  # lazily, as service does: torch is heavy

    await run_blocking(check_backend_available, req)

    async def events() -> AsyncIterator[str]:
        try:
            async with queue.slot():
                async for chunk in _in_thread(lambda: service.stream_chunks(req, chat, include_usage)):
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


async def _in_thread(make: Callable[[], Iterator[dict]]) -> AsyncIterator[dict]:
    """Drive a blocking iterator in its own thread and hand its items to the event loop as they come."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()   # the client left: stop pulling (generation already under way finishes)

    def pump() -> None:
        try:
            for item in make():
                if gone.is_set():
                    break
                loop.call_soon_threadsafe(items.put_nowait, ("item", item))
            loop.call_soon_threadsafe(items.put_nowait, ("end", None))
        except BaseException as e:  # handed to the event loop, raised there
            try:
                loop.call_soon_threadsafe(items.put_nowait, ("error", e))
            except RuntimeError:   # the server shut down mid-stream: nobody is listening
                pass

    threading.Thread(target=pump, name="brushpen-stream", daemon=True).start()
    try:
        while True:
            kind, item = await items.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        gone.set()
