"""OpenAI's object shapes for brushpen's job records: a file, a batch, a fine-tuning job and its events.

`generators/` keeps files, batches and fine-tuning jobs in brushpen's own terms (`FileRecord`,
`BatchRecord`, `FinetuneJob`, `JobEvent`); the routes turn them into the objects OpenAI's Files,
Batch and Fine-tuning APIs return, here, so `openai` clients work unchanged. Each function builds
the dict its route's `response_model` (`responses.py`) checks; nothing here reads the store.
"""

from __future__ import annotations

from brushpen.generators.finetune_jobs import FinetuneJob
from brushpen.generators.jobs import BatchRecord, FileRecord, JobEvent

# A fine-tuning job's status in OpenAI's words, by the job store's. A job still being finalized or
# cancelled is "running" until the worker has finished it.
FINETUNE_STATUS = {"validating": "validating_files", "in_progress": "running", "finalizing": "running",
                   "cancelling": "running", "completed": "succeeded", "failed": "failed", "cancelled": "cancelled",
                   "expired": "failed"}
_BATCH_TIMES = ("created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at",
                "failed_at", "expired_at", "cancelling_at", "cancelled_at")


def file_object(f: FileRecord) -> dict:
    return {"id": f.id, "object": "file", "bytes": f.bytes, "created_at": f.created_at,
            "filename": f.filename, "purpose": f.purpose, "status": "processed"}


def batch_object(b: BatchRecord) -> dict:
    out = {"id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": None,
           "input_file_id": b.input_file_id, "completion_window": b.completion_window,
           "status": b.status, "output_file_id": b.output_file_id, "error_file_id": b.error_file_id}
    out.update({k: getattr(b, k) for k in _BATCH_TIMES})
    out["request_counts"] = {"total": b.total, "completed": b.completed, "failed": b.failed}
    out["metadata"] = b.metadata
    return out


def finetune_job(job: FinetuneJob) -> dict:
    """OpenAI's `fine_tuning.job`, plus brushpen's `family` and `progress`."""
    return {"id": job.id, "object": "fine_tuning.job", "model": job.model, "family": job.family,
            "created_at": job.created_at, "finished_at": job.finished_at, "status": FINETUNE_STATUS[job.status],
            "training_file": job.training_file, "validation_file": None, "suffix": job.suffix,
            "hyperparameters": job.hyperparameters, "fine_tuned_model": job.fine_tuned_model,
            "metrics": job.metrics, "error": job.error, "result_files": [], "seed": None,
            "progress": job.progress}


def finetune_event(ev: JobEvent) -> dict:
    """OpenAI's `fine_tuning.job.event`, plus brushpen's `seq` (what `after` pages by)."""
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{ev.job_id[len('ftjob-'):]}-{ev.seq}",
            "seq": ev.seq, "created_at": ev.created_at, "level": ev.level, "message": ev.message, "data": ev.data,
            "type": "metrics" if ev.data else "message"}
