"""The job store's two databases behind one small interface: SQLite, the embedded default, and
PostgreSQL, which many API replicas and worker processes share (`BRUSHPEN_JOBS_URL=postgresql://...`).

The store's SQL is written once, with `?` placeholders and types both engines take. `Database`
hides what differs:
- connecting: a file opened per call, or a psycopg 3 connection pool;
- how a write transaction starts: `BEGIN IMMEDIATE` takes SQLite's one write lock, while PostgreSQL
  locks rows, so its claims add `FOR UPDATE SKIP LOCKED` and many workers claim at once;
- the order of creation: SQLite's rowid, PostgreSQL's `seq` column;
- the schema, built by numbered migrations that each engine applies once, under a lock, so replicas
  starting together do not race; an older SQLite file is migrated in place.
A PostgreSQL server that cannot be reached is a `StoreUnavailable` (503), never a traceback.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from brushpen.errors import BrushpenError

URL_ENV = "BRUSHPEN_JOBS_URL"
_MIGRATION_LOCK = 0x62727368   # the advisory lock replicas take while migrating ("brsh")


class StoreUnavailable(BrushpenError):
    """The job database cannot be reached (a PostgreSQL restart, a network cut): try again shortly."""
    http_status = 503


# Migration 1 is the store as it was before PostgreSQL, so an existing SQLite file passes it unchanged.
_V1 = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL, content {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    {seq}id TEXT PRIMARY KEY, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT,
    created_at BIGINT NOT NULL, expires_at BIGINT, in_progress_at BIGINT, finalizing_at BIGINT,
    completed_at BIGINT, failed_at BIGINT, expired_at BIGINT, cancelling_at BIGINT,
    cancelled_at BIGINT, output_file_id TEXT, error_file_id TEXT,
    total INTEGER NOT NULL, completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER, response TEXT, PRIMARY KEY (batch_id, idx));
CREATE INDEX IF NOT EXISTS batches_open ON batches (status, created_at);
CREATE TABLE IF NOT EXISTS ft_events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, created_at BIGINT NOT NULL, level TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT, PRIMARY KEY (job_id, seq))
"""
# Migration 2: many workers. A running line holds a lease that its worker's heartbeat extends; a
# batch has a fairness key; workers register, so /metrics can show their heartbeats; an output file
# may live in the shared outputs folder instead of the database.
_V2 = """
ALTER TABLE lines ADD COLUMN worker_id TEXT;
ALTER TABLE lines ADD COLUMN lease_until DOUBLE PRECISION;
ALTER TABLE lines ADD COLUMN started_at DOUBLE PRECISION;
ALTER TABLE lines ADD COLUMN finished_at DOUBLE PRECISION;
ALTER TABLE lines ADD COLUMN seconds DOUBLE PRECISION;
ALTER TABLE batches ADD COLUMN fair_key TEXT;
ALTER TABLE batches ADD COLUMN served_at DOUBLE PRECISION;
ALTER TABLE files ADD COLUMN location TEXT;
CREATE INDEX IF NOT EXISTS lines_pending ON lines (batch_id, idx) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS lines_leased ON lines (worker_id) WHERE worker_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS fair (key TEXT PRIMARY KEY, served_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, proc_start TEXT, families TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL,
    lines_done INTEGER NOT NULL DEFAULT 0, lines_failed INTEGER NOT NULL DEFAULT 0)
"""
MIGRATIONS = (_V1, _V2)


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


class Conn:
    """One connection inside `Database.read()` or `write()`: `execute` takes `?` placeholders on
    either engine and returns a cursor whose rows read by column name."""

    def __init__(self, raw: Any, postgres: bool):
        self.raw, self.postgres = raw, postgres

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(sql.replace("?", "%s") if self.postgres else sql, tuple(args))

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        if self.postgres:
            with self.raw.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self.raw.executemany(sql, rows)


class Database:
    """Where the jobs live: `url` is `postgresql://...`, or None (or `sqlite:///PATH`) for `path`."""

    def __init__(self, path: Path | None = None, url: str | None = None):
        self.url = url
        self.postgres = bool(url) and url.split(":", 1)[0] in ("postgresql", "postgres")
        if url and not self.postgres:
            if not url.startswith("sqlite:///"):
                raise ValueError(f"{URL_ENV} must be postgresql://... or sqlite:///PATH, not '{url.split(':')[0]}:'")
            path = Path(url[len("sqlite:///"):])
        self.path = path
        self.order = "seq" if self.postgres else "rowid"          # creation order of batches
        self.lock_rows = " FOR UPDATE" if self.postgres else ""   # SQLite's write lock covers the database
        self.skip_locked = " FOR UPDATE SKIP LOCKED" if self.postgres else ""
        self._pool: ConnectionPool | None = None
        if self.postgres:
            self._pool = ConnectionPool(url, min_size=1, max_size=int(os.environ.get("BRUSHPEN_JOBS_POOL", "8")),
                                        kwargs={"autocommit": True, "row_factory": dict_row},
                                        check=ConnectionPool.check_connection, timeout=15, open=False,
                                        name="brushpen-jobs")
            self._pool.open(wait=False)
        else:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def describe(self) -> str:
        """Where the store is, without a password."""
        if not self.postgres:
            return f"sqlite:///{self.path}"
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('user', '')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}" \
               f"/{info.get('dbname', '')}"

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with self._connection() as raw:
            yield Conn(raw, self.postgres)

    @contextmanager
    def write(self) -> Iterator[Conn]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        with self._connection() as raw:
            if self.postgres:
                with raw.transaction():
                    yield Conn(raw, True)
                return
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield Conn(raw, False)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self.postgres:
            assert self._pool is not None
            try:
                with self._pool.connection() as raw:
                    yield raw
            except (psycopg.OperationalError, PoolTimeout) as e:
                raise StoreUnavailable(f"the job database at {self.describe()} cannot be reached; "
                                       f"try again shortly ({type(e).__name__})") from None
            return
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        # FULL: a committed line must survive a power cut too, not only a killed process.
        db.execute("PRAGMA synchronous=FULL")
        try:
            yield db
        finally:
            db.close()

    def _migrate(self) -> None:
        if not self.postgres:
            with self.read() as db:
                db.execute("PRAGMA journal_mode=WAL")
        with self.write() as db:
            if self.postgres:
                db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            done = row["v"] or 0
            for version, sql in enumerate(MIGRATIONS, 1):
                if version <= done:
                    continue
                sql = sql.format(blob="BYTEA" if self.postgres else "BLOB",
                                 seq="seq BIGSERIAL, " if self.postgres else "")
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


_pools: dict[str, Database] = {}
_pools_guard = threading.Lock()


def open_database(path: Path | None = None, url: str | None = None) -> Database:
    """The store's database. A PostgreSQL one is opened (pooled and migrated) once per process and url,
    since a pool is not free; a SQLite file is cheap to open, and is checked each time, because a test
    or a user may delete it between two opens."""
    if not url or url.startswith("sqlite:"):
        return Database(path, url)
    with _pools_guard:
        db = _pools.get(url)
        if db is None:
            db = _pools[url] = Database(None, url)
        return db


def jobs_url() -> str | None:
    """The configured store: `BRUSHPEN_JOBS_URL`, or None for the SQLite file under `$BRUSHPEN_HOME`."""
    return os.environ.get(URL_ENV, "").strip() or None
