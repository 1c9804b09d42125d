"""Batch jobs over HTTP, in OpenAI's Files and Batch shapes: upload a JSONL file, start a batch on it,
poll it, cancel it, download its output file. The jobs themselves live in `generators.jobs`, as
brushpen's records; `openai_shapes` turns them into OpenAI's objects.
"""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response

from brushpen.api.deps import JobWorker, Jobs
from brushpen.api.limits import run_blocking
from brushpen.api.openai_shapes import batch_object, file_object
from brushpen.api.responses import BatchList, BatchObject, FileObject
from brushpen.api.schemas import BatchCreateRequest
from brushpen.api.service import BATCH_ENDPOINTS
from brushpen.errors import BadInput, BadParameter
from brushpen.generators.finetune_jobs import FILE_PURPOSE, check_training_file
from brushpen.generators.jobs import parse_batch_file

router = APIRouter(tags=["batches"])
_JSONL = {200: {"description": "The file's bytes: a batch's output or error file is JSONL",
                "content": {"application/jsonl": {"schema": {"type": "string"}}}}}


@router.post("/files", summary="Upload a batch input file (purpose 'batch') or fine-tuning data ('fine-tune')",
             response_model=FileObject)
async def upload_file(jobs: Jobs, file: UploadFile = File(...), purpose: str = Form(...)) -> dict:
    if purpose not in ("batch", FILE_PURPOSE):
        raise BadParameter(f"purpose '{purpose}' is not supported: brushpen takes files for batches "
                           f"(purpose 'batch') and fine-tuning (purpose '{FILE_PURPOSE}')")
    data = await file.read()
    filename = (file.filename or "input.jsonl")[:200]
    if purpose == FILE_PURPOSE:
        await run_blocking(check_training_file, filename, data)
    elif not filename.endswith(".jsonl"):
        raise BadInput(f"'{filename}' is not a .jsonl file: a batch input file holds one JSON request per line")
    else:   # refuse a broken file now, not at batch time
        await run_blocking(parse_batch_file, data, None, BATCH_ENDPOINTS)
    record = await run_blocking(jobs.add_file, filename, purpose, data)
    return file_object(record)


@router.get("/files/{file_id}", summary="A file's details", response_model=FileObject)
async def get_file(file_id: str, jobs: Jobs) -> dict:
    return file_object(await run_blocking(jobs.get_file, file_id))


@router.get("/files/{file_id}/content", summary="A file's content (a batch's output or error JSONL)",
            response_class=Response, responses=_JSONL)
async def file_content(file_id: str, jobs: Jobs) -> Response:
    data = await run_blocking(jobs.file_content, file_id)
    return Response(data, media_type="application/jsonl")


@router.post("/batches", summary="Start a batch job on an uploaded file", response_model=BatchObject)
async def create_batch(body: BatchCreateRequest, jobs: Jobs, worker: JobWorker) -> dict:
    batch = await run_blocking(jobs.create_batch, body.input_file_id, body.endpoint, body.completion_window,
                               body.metadata, BATCH_ENDPOINTS)
    worker.wake()
    return batch_object(batch)


@router.get("/batches/{batch_id}", summary="A batch's status and progress", response_model=BatchObject)
async def get_batch(batch_id: str, jobs: Jobs) -> dict:
    return batch_object(await run_blocking(jobs.get_batch, batch_id))


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch; lines already done stay in its output",
             response_model=BatchObject)
async def cancel_batch(batch_id: str, jobs: Jobs, worker: JobWorker) -> dict:
    batch = await run_blocking(jobs.cancel, batch_id)
    worker.wake()
    return batch_object(batch)


@router.get("/batches", summary="Batches, newest first", response_model=BatchList)
async def list_batches(jobs: Jobs, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> dict:
    data = await run_blocking(jobs.list_batches, limit + 1, after)
    page = [batch_object(b) for b in data[:limit]]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(data) > limit}
