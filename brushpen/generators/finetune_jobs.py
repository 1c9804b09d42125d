"""Fine-tuning jobs: a LoRA training run started from the API or the studio, run by the batch worker.

A fine-tuning job is a batch with one line, endpoint `/v1/fine_tuning/jobs`, in the same SQLite
`JobStore` and run by the same `Worker` as batch jobs, so it inherits their guarantees: it survives
a server restart (the line is claimed again and the family trainer resumes from its checkpoint), a
job that keeps killing the server is failed after `MAX_ATTEMPTS`, and cancelling is one status
change. Training reports progress as events (step, loss, a message) in a table beside the
batches; the API returns them in OpenAI's `fine_tuning.job.event` shape and the studio plots them.

The training data is an uploaded file (purpose `fine-tune`): a JSONL of copy examples for the
copywriter, a zip of images for the GAN, a zip with `fake/` and `real/` folders for the detector.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brushpen.adapters import FinetuneEvent, check_name, list_adapters
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter, BrushpenError, ModelNotFound
from brushpen.generators.jobs import JobStore, current_batch_id
from brushpen.store import scrub_paths

ENDPOINT = "/v1/fine_tuning/jobs"
FILE_PURPOSE = "fine-tune"
# family -> (module with `finetune(req, progress)`, its request class, the data file kind it takes)
TRAINERS = {
    "gan": ("brushpen.gan.finetune", "GanFinetuneRequest", ".zip"),
    "text": ("brushpen.text.lora", "TextFinetuneRequest", ".jsonl"),
    "safety": ("brushpen.safety.lora_train", "DetectorFinetuneRequest", ".zip"),
}
# Request fields the job sets itself, and ones a remote client must not set: paths on the server
# (heldout, families' manifest), the thread count, and the GAN's full/scratch modes, which write
# whole models rather than an adapter.
RESERVED = ("base", "data", "fake", "real", "out", "resume", "progress", "mode", "threads", "command",
            "heldout", "families")
STATUS = {"validating": "validating_files", "in_progress": "running", "finalizing": "running",
          "cancelling": "running", "completed": "succeeded", "failed": "failed", "cancelled": "cancelled",
          "expired": "failed"}

_EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS ft_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT, PRIMARY KEY (job_id, seq));
"""


class Cancelled(BrushpenError):
    """The job was cancelled while it trained."""


@dataclass
class FinetuneJobRequest:
    model: str                        # the base: emoji64, smollm2-135m, detector
    training_file: str                # a file id (purpose fine-tune)
    suffix: str                       # the adapter's name
    hyperparameters: dict[str, Any] = field(default_factory=dict)   # rank, steps, kimg, epochs, ...


def family_of(model: str) -> str:
    """The model family of a base name, so the right trainer runs."""
    from brushpen.edge.export import model_family

    return model_family(model)[1]


def request_class(family: str) -> type:
    module, cls, _ = TRAINERS[family]
    return getattr(importlib.import_module(module), cls)


def allowed_hyperparameters(family: str) -> list[str]:
    return [f.name for f in dataclasses.fields(request_class(family)) if f.name not in RESERVED]


def _ensure_events(store: JobStore) -> None:
    with store._connect() as db:
        db.executescript(_EVENTS_SCHEMA)


def create_job(store: JobStore, req: FinetuneJobRequest) -> dict:
    """Validate a request fully (base, file, name, hyperparameters) and queue it for the worker."""
    family = family_of(req.model)
    if family not in TRAINERS:
        raise BadParameter(f"'{req.model}' is a {family} model: fine-tuning takes a gan, text or safety model")
    check_name(req.suffix)
    record = store.get_file(req.training_file)
    if record.purpose != FILE_PURPOSE:
        raise BadParameter(f"file '{req.training_file}' was not uploaded with purpose '{FILE_PURPOSE}'")
    kind = TRAINERS[family][2]
    if not record.filename.lower().endswith(kind):
        raise BadInput(f"a {family} fine-tune takes a {kind} file; '{record.filename}' is not one")
    allowed = allowed_hyperparameters(family)
    unknown = sorted(set(req.hyperparameters) - set(allowed))
    if unknown:
        raise BadParameter(f"unknown hyperparameters {', '.join(unknown)} for a {family} fine-tune; "
                           f"allowed: {', '.join(allowed)}")
    body = {"model": req.model, "family": family, "training_file": req.training_file, "suffix": req.suffix,
            "hyperparameters": req.hyperparameters}
    _ensure_events(store)
    job_id = "ftjob-" + secrets.token_hex(12)
    now = int(time.time())
    with store._write() as db:
        db.execute("INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, "
                   "created_at, expires_at, total) VALUES (?,?,?,?,?,?,?,?,?)",
                   (job_id, req.training_file, ENDPOINT, "none", "validating", None, now, None, 1))
        db.execute("INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?,?,?,?)",
                   (job_id, 0, job_id, json.dumps(body)))
    return get_job(store, job_id)


def get_job(store: JobStore, job_id: str) -> dict:
    """The job in OpenAI's `fine_tuning.job` shape, plus brushpen's `progress`."""
    with store._connect() as db:
        row = db.execute("SELECT * FROM batches WHERE id=? AND endpoint=?", (job_id, ENDPOINT)).fetchone()
        line = db.execute("SELECT body, status_code, response FROM lines WHERE batch_id=? AND idx=0",
                          (job_id,)).fetchone() if row else None
    if row is None:
        raise ModelNotFound(f"no fine-tuning job with id '{job_id}'")
    body = json.loads(line["body"])
    response = json.loads(line["response"]) if line["response"] else {}
    last = events(store, job_id, limit=1)
    status = STATUS[row["status"]]
    if row["status"] == "completed" and line["status_code"] and line["status_code"] >= 300:
        status = "failed"
    finished = row["completed_at"] or row["failed_at"] or row["cancelled_at"] or row["expired_at"]
    error = response.get("error") if status == "failed" else None
    return {"id": job_id, "object": "fine_tuning.job", "model": body["model"], "family": body["family"],
            "created_at": row["created_at"], "finished_at": finished, "status": status,
            "training_file": body["training_file"], "validation_file": None, "suffix": body["suffix"],
            "hyperparameters": body["hyperparameters"], "fine_tuned_model": response.get("fine_tuned_model"),
            "metrics": response.get("metrics"), "error": error, "result_files": [], "seed": None,
            "progress": (last[0]["data"] if last else None)}


def list_jobs(store: JobStore, limit: int = 20) -> list[dict]:
    with store._connect() as db:
        ids = [r["id"] for r in db.execute("SELECT id FROM batches WHERE endpoint=? ORDER BY created_at DESC, "
                                           "id DESC LIMIT ?", (ENDPOINT, limit))]
    return [get_job(store, i) for i in ids]


def cancel_job(store: JobStore, job_id: str) -> dict:
    get_job(store, job_id)   # a clear 404 for an unknown id
    store.cancel(job_id)
    return get_job(store, job_id)


def add_event(store: JobStore, job_id: str, message: str, data: dict | None = None, level: str = "info") -> None:
    with store._write() as db:
        seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM ft_events WHERE job_id=?", (job_id,)).fetchone()[0]
        db.execute("INSERT INTO ft_events (job_id, seq, created_at, level, message, data) VALUES (?,?,?,?,?,?)",
                   (job_id, seq, int(time.time()), level, message, json.dumps(data) if data else None))


def events(store: JobStore, job_id: str, limit: int = 1000, after: int | None = None) -> list[dict]:
    """The job's events, newest first (as OpenAI lists them); `after` = only those with a larger seq."""
    _ensure_events(store)
    with store._connect() as db:
        rows = db.execute("SELECT * FROM ft_events WHERE job_id=? AND seq > ? ORDER BY seq DESC LIMIT ?",
                          (job_id, -1 if after is None else after, limit)).fetchall()
    return [{"object": "fine_tuning.job.event", "id": f"ftevent-{r['job_id'][6:]}-{r['seq']}", "seq": r["seq"],
             "created_at": r["created_at"], "level": r["level"], "message": r["message"],
             "data": json.loads(r["data"]) if r["data"] else None,
             "type": "metrics" if r["data"] else "message"} for r in rows]


def work_dir(job_id: str) -> Path:
    return get_settings().home / "finetune" / job_id


def _data_file(store: JobStore, job_id: str, file_id: str, suffix: str) -> Path:
    path = work_dir(job_id) / f"train{suffix}"
    if not path.exists():
        from brushpen.store import atomic_write_bytes

        atomic_write_bytes(path, store.file_content(file_id))
    return path


def _build_request(family: str, body: dict, data: Path, resume: bool) -> Any:
    cls = request_class(family)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = dict(body["hyperparameters"])
    values["base"] = body["model"]
    values["out"] = body["suffix"]
    if "data" in names:
        values["data"] = data
    else:   # the detector takes the one zip, with fake/ and real/ folders, as both sources
        values["fake"], values["real"] = data, data
    if "resume" in names:
        values["resume"] = resume
    return cls(**{k: v for k, v in values.items() if k in names})


def run_job(store: JobStore, body: dict) -> tuple[int, dict]:
    """The worker's side: train, streaming events; (status, response) like any batch line."""
    job_id = current_batch_id()
    if job_id is None:
        raise BadParameter("a fine-tuning job runs only inside the job worker")
    _ensure_events(store)
    family = body["family"]
    attempts = store.attempts(job_id).get(0, 1)
    resume = attempts > 1
    add_event(store, job_id, ("resuming" if resume else "starting") +
              f" a {family} fine-tune of {body['model']} into adapter '{body['suffix']}'")
    data = _data_file(store, job_id, body["training_file"], TRAINERS[family][2])
    req = _build_request(family, body, data, resume)
    trainer = importlib.import_module(TRAINERS[family][0])
    last_write = [0.0]
    lock = threading.Lock()

    def progress(ev: FinetuneEvent) -> None:
        if store.status(job_id) == "cancelling":
            raise Cancelled("cancelled")
        now = time.monotonic()
        with lock:   # at most ~2 events a second reach the database; the last step always does
            if now - last_write[0] < 0.5 and ev.step < ev.total:
                return
            last_write[0] = now
        add_event(store, job_id, ev.message or f"step {ev.step}/{ev.total}",
                  {"step": ev.step, "total_steps": ev.total, "train_loss": ev.loss, **ev.metrics})

    try:
        result = trainer.finetune(req, progress)
    except Cancelled:
        add_event(store, job_id, "cancelled", level="warn")
        return 499, {"error": {"message": "cancelled", "type": "cancelled", "code": None}}
    except BrushpenError as e:
        add_event(store, job_id, scrub_paths(f"failed: {e}"), level="error")
        raise
    add_event(store, job_id, f"done: adapter {result.ref}", {"fine_tuned_model": result.ref})
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    return 200, {"fine_tuned_model": result.ref, "adapter_path": scrub_paths(str(result.path)), "metrics": metrics}


def base_dir(model: str) -> Path:
    """The store folder whose adapters/ holds a base model's adapters (also for the text base,
    whose weights live in the cache but whose adapters live in weights/text/smollm2-135m/)."""
    from brushpen.store import store_root
    from brushpen.text.base import BASE_ALIASES, BASE_NAME
    from brushpen.store import resolve_model

    if model in BASE_ALIASES:
        return store_root() / "text" / BASE_NAME
    return resolve_model(model)


def adapters_of(model: str) -> list[str]:
    """`base:name` of every adapter of a base model."""
    from brushpen.text.base import BASE_ALIASES, BASE_NAME

    folder = base_dir(model)
    base = BASE_NAME if model in BASE_ALIASES else folder.name
    return [f"{base}:{a}" for a in list_adapters(folder)]


def check_training_file(filename: str, data: bytes) -> None:
    """Refuse an unusable fine-tuning upload at once: a .jsonl of JSON objects, or a safe .zip."""
    import io
    import zipfile

    from brushpen.generators.checker import ScanLimits, _unsafe_name

    name = filename.lower()
    if name.endswith(".jsonl"):
        from brushpen.text.lora_data import parse_line   # the copywriter trainer's own row checks

        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise BadInput(f"'{filename}' is not UTF-8 text: {e}") from None
        rows = [parse_line(raw, f"line {n} of '{filename}'") for n, raw in enumerate(lines, 1) if raw.strip()]
        if not rows:
            raise BadInput(f"'{filename}' holds no examples")
    elif name.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as e:
            raise BadInput(f"'{filename}' is not a readable zip file: {e}") from None
        for info in infos:
            if (why := _unsafe_name(info.filename)) is not None:
                raise BadInput(f"'{filename}': {info.filename}: {why}")
        files = [i for i in infos if not i.is_dir()]
        if not files:
            raise BadInput(f"'{filename}' is empty")
        # The sizes a zip declares are checked again while it is read (checker.iter_zip); here they
        # refuse an obvious bomb at upload, with a message, rather than skipping it entry by entry later.
        limits = ScanLimits()
        if len(files) > limits.zip_max_entries:
            raise BadInput(f"'{filename}' holds {len(files):,} files; at most {limits.zip_max_entries:,}")
        if (declared := sum(i.file_size for i in files)) > limits.zip_max_total:
            raise BadInput(f"'{filename}' would unpack to {declared:,} bytes; at most {limits.zip_max_total:,}")
        for info in files:
            if info.file_size / max(info.compress_size, 1) > limits.zip_max_ratio:
                raise BadInput(f"'{filename}': {info.filename} is compressed "
                               f"{info.file_size / max(info.compress_size, 1):,.0f}:1, over "
                               f"{limits.zip_max_ratio:,.0f}:1 (a zip bomb?)")
    else:
        raise BadInput(f"'{filename}': fine-tuning data is a .jsonl (copy examples) or a .zip (images)")
