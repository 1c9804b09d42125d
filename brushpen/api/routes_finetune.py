"""Fine-tuning jobs over HTTP, in OpenAI's shapes: `POST /v1/fine_tuning/jobs` on a file uploaded with
purpose `fine-tune`, then poll the job, list its events (step, loss) and cancel it. The jobs run in
the batch worker (`generators.finetune_jobs`), which keeps them in brushpen's terms; `openai_shapes`
turns them into OpenAI's objects. The adapter a job makes is used as `model: base:suffix`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from brushpen.api.deps import JobWorker, Jobs
from brushpen.api.limits import run_blocking
from brushpen.api.openai_shapes import finetune_event, finetune_job
from brushpen.api.responses import FineTuningEventList, FineTuningJob, FineTuningJobList
from brushpen.api.schemas import FineTuningJobCreate
from brushpen.generators import finetune_jobs
from brushpen.generators.finetune_jobs import FinetuneJobRequest

router = APIRouter(tags=["fine-tuning"])


@router.post("/fine_tuning/jobs", summary="Start a LoRA fine-tune of a base model on an uploaded file",
             response_model=FineTuningJob)
async def create_job(body: FineTuningJobCreate, jobs: Jobs, worker: JobWorker) -> dict:
    req = FinetuneJobRequest(body.model, body.training_file, body.suffix, dict(body.hyperparameters))
    job = await run_blocking(finetune_jobs.create_job, jobs, req)
    worker.wake()
    return finetune_job(job)


@router.get("/fine_tuning/jobs", summary="Fine-tuning jobs, newest first", response_model=FineTuningJobList)
async def list_jobs(jobs: Jobs, limit: int = Query(20, ge=1, le=100)) -> dict:
    data = await run_blocking(finetune_jobs.list_jobs, jobs, limit)
    return {"object": "list", "data": [finetune_job(j) for j in data], "has_more": len(data) == limit}


@router.get("/fine_tuning/jobs/{job_id}", summary="A fine-tuning job's status, progress and result",
            response_model=FineTuningJob)
async def get_job(job_id: str, jobs: Jobs) -> dict:
    return finetune_job(await run_blocking(finetune_jobs.get_job, jobs, job_id))


@router.get("/fine_tuning/jobs/{job_id}/events", summary="A job's events (step, loss), newest first",
            response_model=FineTuningEventList)
async def job_events(job_id: str, jobs: Jobs, limit: int = Query(100, ge=1, le=10_000),
                     after: int | None = Query(None, ge=-1)) -> dict:
    await run_blocking(finetune_jobs.get_job, jobs, job_id)   # a clear 404 for an unknown id
    data = await run_blocking(finetune_jobs.events, jobs, job_id, limit + 1, after)
    return {"object": "list", "data": [finetune_event(e) for e in data[:limit]], "has_more": len(data) > limit}


@router.post("/fine_tuning/jobs/{job_id}/cancel", summary="Cancel a fine-tuning job", response_model=FineTuningJob)
async def cancel_job(job_id: str, jobs: Jobs, worker: JobWorker) -> dict:
    job = await run_blocking(finetune_jobs.cancel_job, jobs, job_id)
    worker.wake()
    return finetune_job(job)
