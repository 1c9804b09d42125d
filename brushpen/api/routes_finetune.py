"""Fine-tuning jobs over HTTP, in OpenAI's shapes: `POST /v1/fine_tuning/jobs` on a file uploaded with
purpose `fine-tune`, then poll the job, list its events (step, loss) and cancel it. The jobs run in
the batch worker (`generators.finetune_jobs`); the adapter they make is used as `model: base:suffix`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from brushpen.api.limits import run_blocking
from brushpen.api.schemas import FineTuningJobCreate
from brushpen.generators import finetune_jobs
from brushpen.generators.finetune_jobs import FinetuneJobRequest

router = APIRouter(tags=["fine-tuning"])


@router.post("/fine_tuning/jobs", summary="Start a LoRA fine-tune of a base model on an uploaded file")
async def create_job(body: FineTuningJobCreate, request: Request) -> dict:
    req = FinetuneJobRequest(body.model, body.training_file, body.suffix, dict(body.hyperparameters))
    job = await run_blocking(finetune_jobs.create_job, request.app.state.jobs, req)
    request.app.state.worker.wake()
    return job


@router.get("/fine_tuning/jobs", summary="Fine-tuning jobs, newest first")
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100)) -> dict:
    data = await run_blocking(finetune_jobs.list_jobs, request.app.state.jobs, limit)
    return {"object": "list", "data": data, "has_more": len(data) == limit}


@router.get("/fine_tuning/jobs/{job_id}", summary="A fine-tuning job's status, progress and result")
async def get_job(job_id: str, request: Request) -> dict:
    return await run_blocking(finetune_jobs.get_job, request.app.state.jobs, job_id)


@router.get("/fine_tuning/jobs/{job_id}/events", summary="A job's events (step, loss), newest first")
async def job_events(job_id: str, request: Request, limit: int = Query(100, ge=1, le=10_000),
                     after: int | None = Query(None, ge=-1)) -> dict:
    store = request.app.state.jobs
    await run_blocking(finetune_jobs.get_job, store, job_id)
    data = await run_blocking(finetune_jobs.events, store, job_id, limit + 1, after)
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit}


@router.post("/fine_tuning/jobs/{job_id}/cancel", summary="Cancel a fine-tuning job")
async def cancel_job(job_id: str, request: Request) -> dict:
    job = await run_blocking(finetune_jobs.cancel_job, request.app.state.jobs, job_id)
    request.app.state.worker.wake()
    return job
