"""Batch jobs: uploaded JSONL files of requests, run by workers, that survive crashes and restarts.

Everything lives in one database: by default SQLite under `$BRUSHPEN_HOME/jobs/` (WAL mode), or
PostgreSQL with `BRUSHPEN_JOBS_URL`, which many API replicas and worker processes share
(`jobs_db`). It holds uploaded files, batches and their lines, kept as brushpen's own records
(`FileRecord`, `BatchRecord`, `JobEvent`); the API shows them in OpenAI's Files and Batch shapes,
so `openai` clients work unchanged. Four rules make a job resumable with no lost and no duplicated
output:
- a line's result is written in the same transaction that marks it done, so after a kill a line is
  either done with its result or still pending, never half-way, and a second result is dropped;
- a worker claims a line with a lease that its heartbeat extends; a line whose worker died is
  claimed again when the lease runs out (at once, when the dead worker was on this machine);
- a line whose request names no seed gets one derived from the batch id and its index
  (`line_seed`), so redoing a line cut off by a kill gives the very output it would have given;
- the output and error files are written in the same transaction that marks the batch finished.
A line that kills its worker `MAX_ATTEMPTS` times is failed, so one bad line cannot wedge a job.
Workers take lines round robin over fairness keys (a batch's `metadata.user`, else the batch), so
one client's huge batch does not starve the others.

This module knows nothing of HTTP: the API names the endpoints a batch may run; `worker.Worker`
runs lines with a `LineRunner` it is given.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Collection

from brushpen.config import get_settings
from brushpen.errors import BadParameter, ModelNotFound
from brushpen.generators.jobs_db import Conn, Database, jobs_url, open_database
from brushpen.generators.jobs_records import (COMPLETION_WINDOWS, FINISHED, MAX_ATTEMPTS, MAX_LINES, OPEN,  # noqa: F401
                                              SINGLE_JOB_WINDOW, BatchRecord, Claim, FileRecord, JobEvent,
                                              WorkerRecord, current_batch_id, line_record_id, line_seed,
                                              parse_batch_file, set_current_batch, shared_outputs)
from brushpen.store import atomic_write_bytes


STALE_WORKER_S = 86400.0   # a registered worker this long without a heartbeat is forgotten


def _proc_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot), to tell a live worker from a new process that
    reuses its pid after a restart; None where /proc is not there."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process: alive
        return True
    return proc_start is None or _proc_start(pid) in (None, proc_start)


class JobStore:
    """Files, batches and lines in SQLite or PostgreSQL. Safe to share between threads and processes:
    every write is one short transaction.

    `path` is a SQLite file; without one, `url` (or `BRUSHPEN_JOBS_URL`) picks the database, and
    without that it is `$BRUSHPEN_HOME/jobs/jobs.sqlite3`."""

    def __init__(self, path: Path | None = None, url: str | None = None):
        url = url if url is not None else (None if path is not None else jobs_url())
        self.path = Path(path) if path is not None else get_settings().home / "jobs" / "jobs.sqlite3"
        self.db: Database = open_database(self.path, url)
        self.outputs = shared_outputs()

    def describe(self) -> str:
        return self.db.describe()

    # ---- files ---------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, data: bytes, db: Conn | None = None,
                 file_id: str | None = None) -> FileRecord:
        """Keep a file: in the database, or with `BRUSHPEN_OUTPUTS` set, a batch's output in that
        shared folder (written before the row that points at it is committed)."""
        rec = FileRecord(file_id or "file-" + secrets.token_hex(12), purpose, filename, len(data), int(time.time()))
        location = None
        if self.outputs is not None and purpose == "batch_output":
            location = f"files/{rec.id}.jsonl"
            atomic_write_bytes(self.outputs / location, data)
            data = b""
        sql = "INSERT INTO files (id, purpose, filename, bytes, created_at, content, location) VALUES (?,?,?,?,?,?,?)"
        args = (rec.id, rec.purpose, rec.filename, rec.bytes, rec.created_at, data, location)
        if db is not None:
            db.execute(sql, args)
        else:
            with self.db.write() as w:
                w.execute(sql, args)
        return rec

    def get_file(self, file_id: str) -> FileRecord:
        with self.db.read() as db:
            row = db.execute("SELECT id, purpose, filename, bytes, created_at FROM files WHERE id=?",
                             (file_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no file with id '{file_id}'")
        return FileRecord(**dict(row))

    def file_content(self, file_id: str) -> bytes:
        with self.db.read() as db:
            row = db.execute("SELECT content, location FROM files WHERE id=?", (file_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no file with id '{file_id}'")
        if not row["location"]:
            return bytes(row["content"])
        if self.outputs is None:
            raise ModelNotFound(f"file '{file_id}' lies in the shared outputs folder, and this server has "
                                f"no BRUSHPEN_OUTPUTS set")
        try:
            return (self.outputs / row["location"]).read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"file '{file_id}' is missing from the shared outputs folder "
                                f"(is BRUSHPEN_OUTPUTS the same volume on every replica?)") from None

    # ---- batches ---------------------------------------------------------------------------

    def create_batch(self, input_file_id: str, endpoint: str, completion_window: str = "24h",
                     metadata: dict | None = None, endpoints: Collection[str] | None = None) -> BatchRecord:
        """A batch of an uploaded file's lines; `endpoints` are the ones the runner takes (None: any).
        Its fairness key is `metadata.user` when given (OpenAI's name for the end user), else itself."""
        if endpoints is not None and endpoint not in endpoints:
            raise BadParameter(f"endpoint '{endpoint}' cannot run in a batch: expected one of {', '.join(endpoints)}")
        if completion_window not in COMPLETION_WINDOWS:
            raise BadParameter(f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}")
        if self.get_file(input_file_id).purpose != "batch":
            raise BadParameter(f"file '{input_file_id}' was not uploaded with purpose 'batch'")
        lines = parse_batch_file(self.file_content(input_file_id), endpoint, endpoints)
        batch_id = "batch_" + secrets.token_hex(12)
        user = (metadata or {}).get("user")
        fair_key = f"user:{user}" if isinstance(user, str) and user else f"batch:{batch_id}"
        now = int(time.time())
        with self.db.write() as db:
            db.execute("INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, "
                       "created_at, expires_at, total, fair_key) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (batch_id, input_file_id, endpoint, completion_window, "validating",
                        json.dumps(metadata) if metadata else None, now,
                        now + COMPLETION_WINDOWS[completion_window], len(lines), fair_key))
            db.executemany("INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?,?,?,?)",
                           [(batch_id, i, cid, json.dumps(body)) for i, (cid, body) in enumerate(lines)])
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchRecord:
        with self.db.read() as db:
            row = db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        if row is None:
            raise ModelNotFound(f"no batch with id '{batch_id}'")
        return BatchRecord.from_row(row)

    def list_batches(self, limit: int = 20, after: str | None = None) -> list[BatchRecord]:
        order = self.db.order
        with self.db.read() as db:
            # One-line jobs (fine-tuning) share the table but list apart: they have no completion window.
            if after:
                rows = db.execute(f"SELECT * FROM batches WHERE created_at <= (SELECT created_at FROM batches "
                                  f"WHERE id=?) AND id != ? AND completion_window != ? ORDER BY created_at DESC, "
                                  f"{order} DESC LIMIT ?", (after, after, SINGLE_JOB_WINDOW, limit)).fetchall()
            else:
                rows = db.execute(f"SELECT * FROM batches WHERE completion_window != ? ORDER BY created_at DESC, "
                                  f"{order} DESC LIMIT ?", (SINGLE_JOB_WINDOW, limit)).fetchall()
        return [BatchRecord.from_row(r) for r in rows]

    def open_batches(self) -> list[BatchRecord]:
        """Batches and jobs not finished yet, oldest first (the studio's queue view)."""
        with self.db.read() as db:
            rows = db.execute(f"SELECT * FROM batches WHERE status IN ({','.join('?' * len(OPEN))}) "
                              f"ORDER BY created_at, {self.db.order}", OPEN).fetchall()
        return [BatchRecord.from_row(r) for r in rows]

    def cancel(self, batch_id: str) -> BatchRecord:
        """Ask the workers to stop a batch; lines already done stay in its output file."""
        with self.db.write() as db:
            row = db.execute("SELECT status FROM batches WHERE id=?" + self.db.lock_rows, (batch_id,)).fetchone()
            if row is None:
                raise ModelNotFound(f"no batch with id '{batch_id}'")
            if row["status"] in FINISHED:
                raise BadParameter(f"batch '{batch_id}' is already {row['status']}")
            db.execute("UPDATE batches SET status='cancelling', cancelling_at=? WHERE id=? AND status != 'cancelling'",
                       (int(time.time()), batch_id))
        return self.get_batch(batch_id)

    def status(self, batch_id: str) -> str:
        with self.db.read() as db:
            return db.execute("SELECT status FROM batches WHERE id=?", (batch_id,)).fetchone()["status"]

    # ---- the workers' side: claims, leases, results ------------------------------------------

    def claim(self, worker_id: str, endpoints: Collection[str], lease_s: float) -> Claim | None:
        """Lease the next line to run, round robin over fairness keys: the key served longest ago
        first, then its batch served longest ago, then the batch's lowest pending line. The attempt
        is counted now, so a line that kills its worker every time is recognised after a restart."""
        now = time.time()
        marks = ",".join("?" * len(endpoints))
        with self.db.write() as db:
            candidates = db.execute(
                f"SELECT b.id, b.endpoint, COALESCE(b.fair_key, b.id) AS fkey FROM batches b "
                f"LEFT JOIN fair f ON f.key = COALESCE(b.fair_key, b.id) "
                f"WHERE b.status IN ('validating','in_progress') AND b.endpoint IN ({marks}) "
                f"AND (b.expires_at IS NULL OR b.expires_at > ?) "
                f"ORDER BY COALESCE(f.served_at, 0), COALESCE(b.served_at, 0), b.created_at, b.{self.db.order} "
                f"LIMIT 64", (*endpoints, now)).fetchall()
            for c in candidates:
                row = db.execute("SELECT idx, body, attempts FROM lines WHERE batch_id=? AND status='pending' "
                                 "AND (lease_until IS NULL OR lease_until < ?) ORDER BY idx LIMIT 1"
                                 + self.db.skip_locked, (c["id"], now)).fetchone()
                if row is None:
                    continue
                db.execute("UPDATE lines SET attempts=attempts+1, worker_id=?, lease_until=?, started_at=? "
                           "WHERE batch_id=? AND idx=?", (worker_id, now + lease_s, now, c["id"], row["idx"]))
                db.execute("UPDATE batches SET served_at=?, in_progress_at=COALESCE(in_progress_at, ?), status="
                           "CASE WHEN status='validating' THEN 'in_progress' ELSE status END WHERE id=?",
                           (now, int(now), c["id"]))
                db.execute("INSERT INTO fair (key, served_at) VALUES (?,?) "
                           "ON CONFLICT (key) DO UPDATE SET served_at=excluded.served_at", (c["fkey"], now))
                return Claim(c["id"], row["idx"], c["endpoint"], json.loads(row["body"]), row["attempts"])
        return None

    def finish_line(self, batch_id: str, idx: int, status_code: int, response: dict,
                    worker_id: str | None = None, seconds: float | None = None) -> bool:
        """Record a line's result and mark it done in one transaction; a second call is a no-op.
        Returns whether the batch has no pending line left (then `settle` finalizes it)."""
        ok = 200 <= status_code < 300
        with self.db.write() as db:
            cur = db.execute("UPDATE lines SET status=?, status_code=?, response=?, lease_until=NULL, "
                             "finished_at=?, seconds=? WHERE batch_id=? AND idx=? AND status='pending'",
                             ("done" if ok else "failed", status_code, json.dumps(response), time.time(),
                              seconds, batch_id, idx))
            if cur.rowcount:
                column = "completed" if ok else "failed"
                db.execute(f"UPDATE batches SET {column}={column}+1 WHERE id=?", (batch_id,))
                if worker_id:
                    column = "lines_done" if ok else "lines_failed"
                    db.execute(f"UPDATE workers SET {column}={column}+1 WHERE id=?", (worker_id,))
            left = db.execute("SELECT COUNT(*) AS n FROM lines WHERE batch_id=? AND status='pending'",
                              (batch_id,)).fetchone()["n"]
        return left == 0

    def settle(self) -> list[tuple[str, str]]:
        """Finalize what is due: cancelled batches once no line of theirs is running, expired ones,
        and finished ones whose last worker died before finalizing. Returns (batch, new status)."""
        now = time.time()
        done = []
        with self.db.read() as db:
            rows = db.execute("SELECT b.id, b.status, b.expires_at, "
                              "(SELECT COUNT(*) FROM lines l WHERE l.batch_id=b.id AND l.status='pending') AS pending, "
                              "(SELECT COUNT(*) FROM lines l WHERE l.batch_id=b.id AND l.status='pending' "
                              "AND l.lease_until > ?) AS running "
                              "FROM batches b WHERE b.status IN ('validating','in_progress','cancelling','finalizing')",
                              (now,)).fetchall()
        for r in rows:
            if r["status"] == "cancelling":
                final = "cancelled" if r["running"] == 0 else None
            elif r["expires_at"] and now > r["expires_at"]:
                final = "expired"
            else:
                final = "completed" if r["pending"] == 0 else None
            if final and self.finalize(r["id"], final):
                done.append((r["id"], final))
        return done

    def finalize(self, batch_id: str, final_status: str) -> bool:
        """Write the output and error files and mark the batch finished, all in one transaction.
        Returns False when another worker finalized it first."""
        now = int(time.time())
        with self.db.write() as db:
            row = db.execute("SELECT status FROM batches WHERE id=?" + self.db.lock_rows, (batch_id,)).fetchone()
            if row is None or row["status"] in FINISHED:
                return False
            db.execute("UPDATE batches SET finalizing_at=COALESCE(finalizing_at, ?) WHERE id=?", (now, batch_id))
            rows = db.execute("SELECT idx, custom_id, status, status_code, response FROM lines WHERE batch_id=? "
                              "AND status != 'pending' ORDER BY idx", (batch_id,)).fetchall()
            outputs: dict[str, list[str]] = {"done": [], "failed": []}
            for r in rows:
                record = {"id": line_record_id(batch_id, r["idx"], "batch_req_"), "custom_id": r["custom_id"],
                          "response": {"status_code": r["status_code"],
                                       "request_id": line_record_id(batch_id, r["idx"], "req_"),
                                       "body": json.loads(r["response"])}, "error": None}
                outputs[r["status"]].append(json.dumps(record, ensure_ascii=False))
            ids = {}
            for kind, name in (("done", "output"), ("failed", "error")):
                if outputs[kind]:
                    data = ("\n".join(outputs[kind]) + "\n").encode("utf-8")
                    # Derived, not random: a finalize retried after a crash rewrites the same shared file.
                    file_id = line_record_id(batch_id, -1, f"file-{name}-")
                    ids[name] = self.add_file(f"{batch_id}_{name}.jsonl", "batch_output", data, db, file_id).id
            stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at",
                     "failed": "failed_at"}[final_status]
            db.execute(f"UPDATE batches SET status=?, {stamp}=?, output_file_id=?, error_file_id=? WHERE id=?",
                       (final_status, now, ids.get("output"), ids.get("error"), batch_id))
        return True

    def count_as_first_attempt(self, batch_id: str, idx: int) -> None:
        """Forget a line's earlier attempts: a long line (a fine-tuning job) that got further than
        ever before is not one that stops the server, however often a restart interrupted it."""
        with self.db.write() as db:
            db.execute("UPDATE lines SET attempts=1 WHERE batch_id=? AND idx=? AND status='pending'", (batch_id, idx))

    def attempts(self, batch_id: str) -> dict[int, int]:
        """How many times each line was started (tests use it to show no line ran twice)."""
        with self.db.read() as db:
            return {r["idx"]: r["attempts"] for r in
                    db.execute("SELECT idx, attempts FROM lines WHERE batch_id=?", (batch_id,))}

    def line_workers(self, batch_id: str) -> dict[int, str | None]:
        """Which worker ran (or runs) each line."""
        with self.db.read() as db:
            return {r["idx"]: r["worker_id"] for r in
                    db.execute("SELECT idx, worker_id FROM lines WHERE batch_id=?", (batch_id,))}

    # ---- workers: registration and heartbeats ------------------------------------------------

    def register_worker(self, worker_id: str, families: Collection[str]) -> None:
        """Announce a worker, first freeing the lines of any dead worker on this machine, whose leases
        need not run out (a studio restarted after a crash picks its job up at once), and forgetting
        workers silent for a day anywhere."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        self.release_dead_local()
        with self.db.write() as db:
            # A worker silent for a day on another machine is gone; its leases ran out long ago.
            db.execute("DELETE FROM workers WHERE heartbeat_at < ?", (now - STALE_WORKER_S,))
            db.execute("INSERT INTO workers (id, host, pid, proc_start, families, started_at, heartbeat_at) "
                       "VALUES (?,?,?,?,?,?,?)", (worker_id, host, pid, _proc_start(pid), ",".join(families), now, now))

    def release_dead_local(self) -> int:
        """Free the leased lines of this machine's workers whose process is gone; returns how many."""
        with self.db.read() as db:
            rows = db.execute("SELECT id, pid, proc_start FROM workers WHERE host=?",
                              (socket.gethostname(),)).fetchall()
        freed = 0
        for r in rows:
            if not _alive(r["pid"], r["proc_start"]):
                freed += self.retire_worker(r["id"])
        return freed

    def retire_worker(self, worker_id: str) -> int:
        """Forget a worker and free its leased lines (a clean stop, or a dead one); returns how many."""
        with self.db.write() as db:
            cur = db.execute("UPDATE lines SET lease_until=NULL WHERE worker_id=? AND status='pending' "
                             "AND lease_until IS NOT NULL", (worker_id,))
            db.execute("DELETE FROM workers WHERE id=?", (worker_id,))
            return cur.rowcount

    def heartbeat(self, worker_id: str, running: Collection[tuple[str, int]], lease_s: float) -> None:
        """A worker is alive: extend the leases of the lines it runs."""
        now = time.time()
        with self.db.write() as db:
            db.execute("UPDATE workers SET heartbeat_at=? WHERE id=?", (now, worker_id))
            for batch_id, idx in running:
                db.execute("UPDATE lines SET lease_until=? WHERE batch_id=? AND idx=? AND worker_id=? "
                           "AND status='pending'", (now + lease_s, batch_id, idx, worker_id))

    def workers(self) -> list[WorkerRecord]:
        with self.db.read() as db:
            rows = db.execute("SELECT id, host, pid, families, started_at, heartbeat_at, lines_done, lines_failed "
                              "FROM workers ORDER BY started_at").fetchall()
        return [WorkerRecord(**dict(r)) for r in rows]

    # ---- one-line jobs (fine-tuning) and their progress events ------------------------------

    def create_single(self, job_id: str, file_id: str, endpoint: str, body: dict) -> None:
        """A job of one line: the line's custom_id is the job's id."""
        with self.db.write() as db:
            db.execute("INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, "
                       "created_at, expires_at, total, fair_key) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (job_id, file_id, endpoint, SINGLE_JOB_WINDOW, "validating", None, int(time.time()), None, 1,
                        f"batch:{job_id}"))
            db.execute("INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?,?,?,?)",
                       (job_id, 0, job_id, json.dumps(body)))

    def single(self, job_id: str, endpoint: str) -> tuple[BatchRecord, dict] | None:
        """(the batch, its one line's row: body, status, status_code, response) of a one-line job, or None."""
        with self.db.read() as db:
            row = db.execute("SELECT * FROM batches WHERE id=? AND endpoint=?", (job_id, endpoint)).fetchone()
            if row is None:
                return None
            line = db.execute("SELECT body, status, status_code, response FROM lines WHERE batch_id=? AND idx=0",
                              (job_id,)).fetchone()
        return BatchRecord.from_row(row), dict(line)

    def job_ids(self, endpoint: str, limit: int) -> list[str]:
        """The newest jobs of one endpoint first."""
        with self.db.read() as db:
            return [r["id"] for r in db.execute(f"SELECT id FROM batches WHERE endpoint=? ORDER BY created_at DESC, "
                                                f"{self.db.order} DESC LIMIT ?", (endpoint, limit))]

    def add_event(self, job_id: str, level: str, message: str, data: dict | None) -> None:
        with self.db.write() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 AS seq FROM ft_events WHERE job_id=?",
                             (job_id,)).fetchone()["seq"]
            db.execute("INSERT INTO ft_events (job_id, seq, created_at, level, message, data) VALUES (?,?,?,?,?,?)",
                       (job_id, seq, int(time.time()), level, message, json.dumps(data) if data else None))

    def events(self, job_id: str, limit: int, after: int | None = None) -> list[JobEvent]:
        """A job's events with a seq above `after`, newest first."""
        with self.db.read() as db:
            rows = db.execute("SELECT * FROM ft_events WHERE job_id=? AND seq > ? ORDER BY seq DESC LIMIT ?",
                              (job_id, -1 if after is None else after, limit)).fetchall()
        return [JobEvent(**{**dict(r), "data": json.loads(r["data"]) if r["data"] else None}) for r in rows]
