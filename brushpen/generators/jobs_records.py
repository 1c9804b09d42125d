"""The job store's records and the reading of batch input files: what `jobs.JobStore` keeps and hands
out (`FileRecord`, `BatchRecord`, `JobEvent`, a worker's `Claim`), with no database in sight.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from brushpen.errors import BadInput

COMPLETION_WINDOWS = {"24h": 24 * 3600}
MAX_LINES = 10_000
MAX_ATTEMPTS = 3
FINISHED = ("completed", "failed", "cancelled", "expired")
SINGLE_JOB_WINDOW = "none"   # the completion window of a one-line job (fine-tuning): how it differs from a batch
OPEN = ("validating", "in_progress", "cancelling", "finalizing")
OUTPUTS_ENV = "BRUSHPEN_OUTPUTS"   # a folder all replicas share; batch output files go there
_running = threading.local()   # which batch the worker thread is running, for runners that report progress


def current_batch_id() -> str | None:
    """The id of the batch the calling worker thread is running (None outside the worker)."""
    return getattr(_running, "batch_id", None)


def set_current_batch(batch_id: str | None) -> None:
    _running.batch_id = batch_id


def shared_outputs() -> Path | None:
    """`BRUSHPEN_OUTPUTS`, the folder replicas share for batch outputs and image links; None: unset."""
    value = os.environ.get(OUTPUTS_ENV, "").strip()
    return Path(value).expanduser() if value else None


@dataclass
class FileRecord:
    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int


@dataclass
class BatchRecord:
    """A batch, or a one-line job (fine-tuning), as its row in the store."""
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str           # "24h", or SINGLE_JOB_WINDOW for a one-line job
    status: str                      # validating, in_progress, finalizing, cancelling, or one of FINISHED
    metadata: dict | None
    created_at: int                  # the times are unix seconds, None until the batch gets there
    expires_at: int | None
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    output_file_id: str | None
    error_file_id: str | None
    total: int                       # lines: all of them, and those done and failed so far
    completed: int
    failed: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BatchRecord:
        fields = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**fields, "metadata": json.loads(row["metadata"]) if row["metadata"] else None})


@dataclass
class JobEvent:
    """One progress event of a one-line job (a fine-tuning step, a message); `seq` counts from 0 per job."""
    job_id: str
    seq: int
    created_at: int
    level: str                       # info, warn, error
    message: str
    data: dict | None                # step, total_steps, train_loss, ...; None for a plain message


@dataclass
class Claim:
    """A line a worker has leased: run it, then `finish_line`."""
    batch_id: str
    idx: int
    endpoint: str
    body: dict
    attempts: int                    # earlier attempts: a line that killed its workers MAX_ATTEMPTS times is failed


@dataclass
class WorkerRecord:
    id: str
    host: str
    pid: int
    families: str
    started_at: float
    heartbeat_at: float
    lines_done: int
    lines_failed: int


def line_seed(batch_id: str, idx: int) -> int:
    """The seed a line runs with when its request names none: fixed by the batch and the line."""
    digest = hashlib.sha256(f"{batch_id}:{idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1   # 31 bits: valid for every generator


def line_record_id(batch_id: str, idx: int, prefix: str) -> str:
    # Derived, not random, so a line redone after a crash writes the same output record.
    return prefix + hashlib.sha256(f"{batch_id}:{idx}:{prefix}".encode()).hexdigest()[:24]


def parse_batch_file(data: bytes, endpoint: str | None,
                     endpoints: Collection[str] | None = None) -> list[tuple[str, dict]]:
    """(custom_id, body) per line of an OpenAI batch input file; a clear error for the first bad line.

    Every line's url must be one of `endpoints` (the ones the runner takes; None: any), and with
    `endpoint` given (a batch's, not at upload) that one.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"the batch file is not UTF-8 text: {e}") from None
    out: list[tuple[str, dict]] = []
    seen: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadInput(f"line {n} of the batch file is not JSON: {e}") from None
        except RecursionError:
            raise BadInput(f"line {n} of the batch file is nested too deeply to read") from None
        if not isinstance(item, dict):
            raise BadInput(f"line {n}: expected an object with custom_id, method, url and body")
        custom_id, method, url, body = (item.get(k) for k in ("custom_id", "method", "url", "body"))
        if not isinstance(custom_id, str) or not custom_id:
            raise BadInput(f"line {n}: custom_id must be a non-empty string")
        if custom_id in seen:
            raise BadInput(f"line {n}: custom_id '{custom_id}' is used twice; each line needs its own")
        if method != "POST":
            raise BadInput(f"line {n}: method must be POST")
        if not isinstance(url, str) or endpoints is not None and url not in endpoints:
            raise BadInput(f"line {n}: url '{url}' cannot run in a batch: expected one of {', '.join(endpoints or ())}")
        if endpoint is not None and url != endpoint:
            raise BadInput(f"line {n}: url '{url}' differs from the batch endpoint '{endpoint}'")
        if not isinstance(body, dict):
            raise BadInput(f"line {n}: body must be a JSON object")
        unknown = set(item) - {"custom_id", "method", "url", "body"}
        if unknown:
            raise BadInput(f"line {n}: unknown fields {', '.join(sorted(unknown))}")
        seen.add(custom_id)
        out.append((custom_id, body))
    if not out:
        raise BadInput("the batch file holds no requests")
    if len(out) > MAX_LINES:
        raise BadInput(f"the batch file holds {len(out):,} requests; the limit is {MAX_LINES:,}")
    return out


