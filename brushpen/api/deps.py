"""The shared resources a route takes with `Depends`: the job store, its worker and the work queue.

`create_app` makes each one once and keeps it on `app.state`; a route names what it needs in its
signature (`jobs: Jobs`, `queue: Queue`) instead of reaching into `request.app.state`, so what a
handler uses is in plain view, and a test can swap one with `app.dependency_overrides`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from brushpen.api.limits import WorkQueue
from brushpen.generators.jobs import JobStore
from brushpen.generators.worker import Worker


def job_store(request: Request) -> JobStore:
    """The store of files, batches and fine-tuning jobs (SQLite, or PostgreSQL with BRUSHPEN_JOBS_URL)."""
    return request.app.state.jobs


def job_worker(request: Request) -> Worker:
    """The embedded worker: `wake()` it after a create or a cancel, so it does not wait for its poll
    (a no-op under `--no-worker`, where `brushpen worker` processes poll the store)."""
    return request.app.state.worker


def work_queue(request: Request) -> WorkQueue:
    """The bounded line for generation work (429 when full)."""
    return request.app.state.queue


Jobs = Annotated[JobStore, Depends(job_store)]
JobWorker = Annotated[Worker, Depends(job_worker)]
Queue = Annotated[WorkQueue, Depends(work_queue)]
