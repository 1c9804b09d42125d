"""Batch jobs: uploaded JSONL files of requests, run by a worker thread, that survive crashes and restarts.

Everything lives in one SQLite database under `$BRUSHPEN_HOME/jobs/` (WAL mode): uploaded files,
batches and their lines, kept as brushpen's own records (`FileRecord`, `BatchRecord`, `JobEvent`);
the API shows them in OpenAI's Files and Batch shapes, so `openai` clients work unchanged. Three
rules make a job resumable with no lost and no duplicated output:
- a line's result is written in the same transaction that marks it done, so after a kill a line is
  either done with its result or still pending, never half-way;
- a line whose request names no seed gets one derived from the batch id and its index
  (`line_seed`), so redoing a line cut off by a kill gives the very output it would have given;
- the output and error files are written in the same transaction that marks the batch finished.
A line that kills the worker `MAX_ATTEMPTS` times is failed, so one bad line cannot wedge a job.

This module knows nothing of HTTP: the API names the endpoints a batch may run, and hands the
worker a `LineRunner` that executes one request body and returns (status code, response body),
and the `ErrorBody` it writes for a line that fails outside the runner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator

from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter, BrushpenError, ModelNotFound
from brushpen.store import scrub_paths

log = logging.getLogger(__name__)

COMPLETION_WINDOWS = {"24h": 24 * 3600}
MAX_LINES = 10_000
MAX_ATTEMPTS = 3
FINISHED = ("completed", "failed", "cancelled", "expired")
SINGLE_JOB_WINDOW = "none"   # the completion window of a one-line job (fine-tuning): how it differs from a batch
LineRunner = Callable[[str, dict], "tuple[int, dict]"]   # (endpoint, body) -> (status, body)
ErrorBody = Callable[[int, str], dict]                   # (status, message) -> the line's response body
_running = threading.local()   # which batch the worker thread is running, for runners that report progress


def current_batch_id() -> str | None:
    """The id of the batch the calling worker thread is running (None outside the worker)."""
    return getattr(_running, "batch_id", None)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER, in_progress_at INTEGER, finalizing_at INTEGER,
    completed_at INTEGER, failed_at INTEGER, expired_at INTEGER, cancelling_at INTEGER,
    cancelled_at INTEGER, output_file_id TEXT, error_file_id TEXT,
    total INTEGER NOT NULL, completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER, response TEXT, PRIMARY KEY (batch_id, idx));
CREATE INDEX IF NOT EXISTS batches_open ON batches (status, created_at);
CREATE TABLE IF NOT EXISTS ft_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT, PRIMARY KEY (job_id, seq));
"""

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
    def from_row(cls, row: sqlite3.Row) -> BatchRecord:
        return cls(**{**dict(row), "metadata": json.loads(row["metadata"]) if row["metadata"] else None})


@dataclass
class JobEvent:
    """One progress event of a one-line job (a fine-tuning step, a message); `seq` counts from 0 per job."""
    job_id: str
    seq: int
    created_at: int
    level: str                       # info, warn, error
    message: str
    data: dict | None                # step, total_steps, train_loss, ...; None for a plain message


def line_seed(batch_id: str, idx: int) -> int:
    """The seed a line runs with when its request names none: fixed by the batch and the line."""
    digest = hashlib.sha256(f"{batch_id}:{idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1   # 31 bits: valid for every generator


def _line_id(batch_id: str, idx: int, prefix: str) -> str:
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


class JobStore:
    """Files, batches and lines in SQLite. Safe to share between threads: each call opens its own
    connection, and every write is one short `BEGIN IMMEDIATE` transaction."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else get_settings().home / "jobs" / "jobs.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        # FULL: a committed line must survive a power cut too, not only a killed process.
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- files ---------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, data: bytes, db: sqlite3.Connection | None = None) -> FileRecord:
        rec = FileRecord("file-" + secrets.token_hex(12), purpose, filename, len(data), int(time.time()))
        sql = "INSERT INTO files (id, purpose, filename, bytes, created_at, content) VALUES (?,?,?,?,?,?)"
        args = (rec.id, rec.purpose, rec.filename, rec.bytes, rec.created_at, sqlite3.Binary(data))
        if db is not None:
            db.execute(sql, args)
        else:
            with self._write() as w:
                w.execute(sql, args)
        return rec

    def get_file(self, file_id: str) -> FileRecord:
        with self._connect() as db:
            row = db.execute("SELECT id, purpose, filename, bytes, created_at FROM files WHERE id=?",
                             (file_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no file with id '{file_id}'")
        return FileRecord(**dict(row))

    def file_content(self, file_id: str) -> bytes:
        with self._connect() as db:
            row = db.execute("SELECT content FROM files WHERE id=?", (file_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no file with id '{file_id}'")
        return bytes(row["content"])

    # ---- batches ---------------------------------------------------------------------------

    def create_batch(self, input_file_id: str, endpoint: str, completion_window: str = "24h",
                     metadata: dict | None = None, endpoints: Collection[str] | None = None) -> BatchRecord:
        """A batch of an uploaded file's lines; `endpoints` are the ones the runner takes (None: any)."""
        if endpoints is not None and endpoint not in endpoints:
            raise BadParameter(f"endpoint '{endpoint}' cannot run in a batch: expected one of {', '.join(endpoints)}")
        if completion_window not in COMPLETION_WINDOWS:
            raise BadParameter(f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}")
        if self.get_file(input_file_id).purpose != "batch":
            raise BadParameter(f"file '{input_file_id}' was not uploaded with purpose 'batch'")
        lines = parse_batch_file(self.file_content(input_file_id), endpoint, endpoints)
        batch_id = "batch_" + secrets.token_hex(12)
        now = int(time.time())
        with self._write() as db:
            db.execute("INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, "
                       "created_at, expires_at, total) VALUES (?,?,?,?,?,?,?,?,?)",
                       (batch_id, input_file_id, endpoint, completion_window, "validating",
                        json.dumps(metadata) if metadata else None, now,
                        now + COMPLETION_WINDOWS[completion_window], len(lines)))
            db.executemany("INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?,?,?,?)",
                           [(batch_id, i, cid, json.dumps(body)) for i, (cid, body) in enumerate(lines)])
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no batch with id '{batch_id}'")
        return BatchRecord.from_row(row)

    def list_batches(self, limit: int = 20, after: str | None = None) -> list[BatchRecord]:
        with self._connect() as db:
            # One-line jobs (fine-tuning) share the table but list apart: they have no completion window.
            if after:
                rows = db.execute("SELECT * FROM batches WHERE created_at <= (SELECT created_at FROM batches "
                                  "WHERE id=?) AND id != ? AND completion_window != ? ORDER BY created_at DESC, "
                                  "id DESC LIMIT ?", (after, after, SINGLE_JOB_WINDOW, limit)).fetchall()
            else:
                rows = db.execute("SELECT * FROM batches WHERE completion_window != ? ORDER BY created_at DESC, "
                                  "id DESC LIMIT ?", (SINGLE_JOB_WINDOW, limit)).fetchall()
        return [BatchRecord.from_row(r) for r in rows]

    def cancel(self, batch_id: str) -> BatchRecord:
        """Ask the worker to stop a batch; lines already done stay in its output file."""
        with self._write() as db:
            row = db.execute("SELECT status FROM batches WHERE id=?", (batch_id,)).fetchone()
            if row is None:
                raise ModelNotFound(f"no batch with id '{batch_id}'")
            if row["status"] in FINISHED:
                raise BadParameter(f"batch '{batch_id}' is already {row['status']}")
            db.execute("UPDATE batches SET status='cancelling', cancelling_at=? WHERE id=? AND status != 'cancelling'",
                       (int(time.time()), batch_id))
        return self.get_batch(batch_id)

    # ---- the worker's side ---------------------------------------------------------------------

    def next_batch(self) -> str | None:
        """The oldest unfinished batch, moved to in_progress if it was waiting. Ties within one
        second of `created_at` go by rowid, the order of creation (ids are random)."""
        with self._write() as db:
            row = db.execute("SELECT id, status FROM batches WHERE status IN "
                             "('validating','in_progress','cancelling','finalizing') "
                             "ORDER BY created_at, rowid LIMIT 1").fetchone()
            if row is None:
                return None
            if row["status"] == "validating":
                db.execute("UPDATE batches SET status='in_progress', in_progress_at=? WHERE id=?",
                           (int(time.time()), row["id"]))
            return row["id"]

    def status(self, batch_id: str) -> str:
        with self._connect() as db:
            return db.execute("SELECT status FROM batches WHERE id=?", (batch_id,)).fetchone()["status"]

    def claim_line(self, batch_id: str) -> tuple[int, dict, int] | None:
        """The next pending line (index, body, attempts so far), counting this attempt first, so a
        line that crashes the process every time is recognised after a restart."""
        with self._write() as db:
            row = db.execute("SELECT idx, body, attempts FROM lines WHERE batch_id=? AND status='pending' "
                             "ORDER BY idx LIMIT 1", (batch_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE lines SET attempts=attempts+1 WHERE batch_id=? AND idx=?", (batch_id, row["idx"]))
            return row["idx"], json.loads(row["body"]), row["attempts"]

    def finish_line(self, batch_id: str, idx: int, status_code: int, response: dict) -> None:
        """Record a line's result and mark it done in one transaction; a second call is a no-op."""
        ok = 200 <= status_code < 300
        with self._write() as db:
            cur = db.execute("UPDATE lines SET status=?, status_code=?, response=? WHERE batch_id=? AND idx=? "
                             "AND status='pending'", ("done" if ok else "failed", status_code,
                                                      json.dumps(response), batch_id, idx))
            if cur.rowcount:
                column = "completed" if ok else "failed"
                db.execute(f"UPDATE batches SET {column}={column}+1 WHERE id=?", (batch_id,))

    def finalize(self, batch_id: str, final_status: str) -> None:
        """Write the output and error files and mark the batch finished, all in one transaction."""
        now = int(time.time())
        with self._write() as db:
            db.execute("UPDATE batches SET finalizing_at=COALESCE(finalizing_at, ?) WHERE id=?", (now, batch_id))
            rows = db.execute("SELECT idx, custom_id, status, status_code, response FROM lines WHERE batch_id=? "
                              "AND status != 'pending' ORDER BY idx", (batch_id,)).fetchall()
            outputs = {"done": [], "failed": []}
            for r in rows:
                record = {"id": _line_id(batch_id, r["idx"], "batch_req_"), "custom_id": r["custom_id"],
                          "response": {"status_code": r["status_code"],
                                       "request_id": _line_id(batch_id, r["idx"], "req_"),
                                       "body": json.loads(r["response"])}, "error": None}
                outputs[r["status"]].append(json.dumps(record, ensure_ascii=False))
            ids = {}
            for kind, name in (("done", "output"), ("failed", "error")):
                if outputs[kind]:
                    data = ("\n".join(outputs[kind]) + "\n").encode("utf-8")
                    ids[name] = self.add_file(f"{batch_id}_{name}.jsonl", "batch_output", data, db).id
            stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at",
                     "failed": "failed_at"}[final_status]
            db.execute(f"UPDATE batches SET status=?, {stamp}=?, output_file_id=?, error_file_id=? WHERE id=?",
                       (final_status, now, ids.get("output"), ids.get("error"), batch_id))

    # ---- one-line jobs (fine-tuning) and their progress events ------------------------------

    def create_single(self, job_id: str, file_id: str, endpoint: str, body: dict) -> None:
        """A job of one line: the line's custom_id is the job's id."""
        with self._write() as db:
            db.execute("INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, "
                       "created_at, expires_at, total) VALUES (?,?,?,?,?,?,?,?,?)",
                       (job_id, file_id, endpoint, SINGLE_JOB_WINDOW, "validating", None, int(time.time()), None, 1))
            db.execute("INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?,?,?,?)",
                       (job_id, 0, job_id, json.dumps(body)))

    def single(self, job_id: str, endpoint: str) -> tuple[BatchRecord, dict] | None:
        """(the batch, its one line's row: body, status, status_code, response) of a one-line job, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM batches WHERE id=? AND endpoint=?", (job_id, endpoint)).fetchone()
            if row is None:
                return None
            line = db.execute("SELECT body, status, status_code, response FROM lines WHERE batch_id=? AND idx=0",
                              (job_id,)).fetchone()
        return BatchRecord.from_row(row), dict(line)

    def job_ids(self, endpoint: str, limit: int) -> list[str]:
        """The newest jobs of one endpoint first."""
        with self._connect() as db:
            return [r["id"] for r in db.execute("SELECT id FROM batches WHERE endpoint=? ORDER BY created_at DESC, "
                                                "id DESC LIMIT ?", (endpoint, limit))]

    def add_event(self, job_id: str, level: str, message: str, data: dict | None) -> None:
        with self._write() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM ft_events WHERE job_id=?",
                             (job_id,)).fetchone()[0]
            db.execute("INSERT INTO ft_events (job_id, seq, created_at, level, message, data) VALUES (?,?,?,?,?,?)",
                       (job_id, seq, int(time.time()), level, message, json.dumps(data) if data else None))

    def events(self, job_id: str, limit: int, after: int | None = None) -> list[JobEvent]:
        """A job's events with a seq above `after`, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM ft_events WHERE job_id=? AND seq > ? ORDER BY seq DESC LIMIT ?",
                              (job_id, -1 if after is None else after, limit)).fetchall()
        return [JobEvent(**{**dict(r), "data": json.loads(r["data"]) if r["data"] else None}) for r in rows]

    def count_as_first_attempt(self, batch_id: str, idx: int) -> None:
        """Forget a line's earlier attempts: a long line (a fine-tuning job) that got further than
        ever before is not one that stops the server, however often a restart interrupted it."""
        with self._write() as db:
            db.execute("UPDATE lines SET attempts=1 WHERE batch_id=? AND idx=? AND status='pending'", (batch_id, idx))

    def attempts(self, batch_id: str) -> dict[int, int]:
        """How many times each line was started (tests use it to show no line ran twice)."""
        with self._connect() as db:
            return {r["idx"]: r["attempts"] for r in
                    db.execute("SELECT idx, attempts FROM lines WHERE batch_id=?", (batch_id,))}


class Worker:
    """Runs batches one line at a time in a daemon thread; `wake()` after a create or cancel.

    `error_body` makes the response of a line that fails outside `run_line` (it raised, or it
    stopped the server too often), so every error line has the shape of the runner's own."""

    def __init__(self, store: JobStore, run_line: LineRunner, error_body: ErrorBody, poll_s: float = 1.0):
        self.store, self.run_line, self.error_body, self.poll_s = store, run_line, error_body, poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="brushpen-batch-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch_id = self.store.next_batch()
                if batch_id is not None:
                    self.run_batch(batch_id)
                    continue
            except Exception:  # a broken database must not kill the worker silently forever
                log.exception("batch worker error; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run_batch(self, batch_id: str) -> None:
        """Run the pending lines of one batch, then finalize it (completed, cancelled or expired)."""
        expires_at = self.store.get_batch(batch_id).expires_at
        while not self._stop.is_set():
            status = self.store.status(batch_id)
            if status == "cancelling":
                return self.store.finalize(batch_id, "cancelled")
            if expires_at and time.time() > expires_at:
                return self.store.finalize(batch_id, "expired")
            claimed = self.store.claim_line(batch_id)
            if claimed is None:
                return self.store.finalize(batch_id, "completed")
            idx, body, attempts = claimed
            if attempts >= MAX_ATTEMPTS:
                self.store.finish_line(batch_id, idx, 500, self.error_body(
                    500, f"this request stopped the server {attempts} times; it was not retried again"))
                continue
            body.setdefault("seed", line_seed(batch_id, idx))
            endpoint = self.store.get_batch(batch_id).endpoint
            _running.batch_id = batch_id
            try:
                status_code, response = self._run_one(endpoint, body)
            finally:
                _running.batch_id = None
            self.store.finish_line(batch_id, idx, status_code, response)

    def _run_one(self, endpoint: str, body: dict) -> tuple[int, dict]:
        try:
            return self.run_line(endpoint, body)
        except BrushpenError as e:
            status = getattr(e, "http_status", 400)
            return status, self.error_body(status, scrub_paths(str(e)))
        except Exception as e:  # one broken line fails alone; the batch goes on
            log.exception("batch line failed")
            return 500, self.error_body(500, f"internal error ({type(e).__name__}); see the server log")
