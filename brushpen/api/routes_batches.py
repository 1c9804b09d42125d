"""Batch jobs over HTTP, in OpenAI's Files and Batch shapes: upload a JSONL file, start a batch on it,
poll it, cancel it, download its output file. The jobs themselves live in `generators.jobs`.
"""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from brushpen.api.limits import run_blocking
from brushpen.api.schemas import BatchCreateRequest
from brushpen.errors import BadInput, BadParameter
from brushpen.generators.finetune_jobs import FILE_PURPOSE, check_training_file
from brushpen.generators.jobs import JobStore, parse_batch_file

router = APIRouter(tags=["batches"])


def _store(request: Request) -> JobStore:
    return request.app.state.jobs


@router.post("/files", summary="Upload a batch input file (purpose 'batch') or fine-tuning data ('fine-tune')")
async def upload_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> dict:
    if purpose not in ("batch", FILE_PURPOSE):
        raise BadParameter(f"purpose '{purpose}' is not supported: brushpen takes files for batches "
                           f"(purpose 'batch') and fine-tuning (purpose '{FILE_PURPOSE}')")
    data = await file.read()
    filename = (file.filename or "input.jsonl")[:200]
    if purpose == FILE_PURPOSE:
        await run_blocking(check_training_file, filename, data)
    elif not filename.endswith(".jsonl"):
        raise BadInput(f"'{filename}' is not a .jsonl file: a batch input file holds one JSON request per line")
    else:
        await run_blocking(parse_batch_file, data, None)   # refuse a broken file now, not at batch time
    record = await run_blocking(_store(request).add_file, filename, purpose, data)
    return record.to_openai()


@router.get("/files/{file_id}", summary="A file's details")
async def get_file(file_id: str, request: Request) -> dict:
    return (await run_blocking(_store(request).get_file, file_id)).to_openai()


@router.get("/files/{file_id}/content", summary="A file's content (a batch's output or error JSONL)")
async def file_content(file_id: str, request: Request) -> Response:
    data = await run_blocking(_store(request).file_content, file_id)
    return Response(data, media_type="application/jsonl")


@router.post("/batches", summary="Start a batch job on an uploaded file")
async def create_batch(body: BatchCreateRequest, request: Request) -> dict:
    batch = await run_blocking(_store(request).create_batch, body.input_file_id, body.endpoint,
                               body.completion_window, body.metadata)
    request.app.state.worker.wake()
    return batch


@router.get("/batches/{batch_id}", summary="A batch's status and progress")
async def get_batch(batch_id: str, request: Request) -> dict:
    return await run_blocking(_store(request).get_batch, batch_id)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch; lines already done stay in its output")
async def cancel_batch(batch_id: str, request: Request) -> dict:
    batch = await run_blocking(_store(request).cancel, batch_id)
    request.app.state.worker.wake()
    return batch


@router.get("/batches", summary="Batches, newest first")
async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> dict:
    data = await run_blocking(_store(request).list_batches, limit + 1, after)
    page = data[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(data) > limit}
