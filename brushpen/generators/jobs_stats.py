"""What the job store holds right now, summed for monitoring: the queue per family, lines done and
failed, how long lines took (as histogram buckets) and the workers' heartbeats.

It is read from the database at each call, so any API replica reports the whole deployment, not
just the work of its own process; `/metrics` turns it into Prometheus text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from brushpen.generators.jobs import JobStore, WorkerRecord
from brushpen.generators.worker import FAMILIES

# Upper bounds of the line-duration buckets, in seconds: an image line is tens of milliseconds, a
# copy line seconds, a fine-tuning job minutes to hours.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)


@dataclass
class FamilyStats:
    queued: int = 0                  # pending lines of open batches, leased or not
    running: int = 0                 # of which leased now
    done: int = 0
    failed: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))   # cumulative counts, per BUCKETS
    timed: int = 0                   # lines with a recorded duration
    seconds: float = 0.0             # their total duration


@dataclass
class QueueStats:
    families: dict[str, FamilyStats]
    batches: dict[str, int]          # by status
    workers: list[WorkerRecord]
    now: float


def _family(endpoint: str) -> str:
    return next((f for f, endpoints in FAMILIES.items() if endpoint in endpoints), "other")


def queue_stats(store: JobStore) -> QueueStats:
    now = time.time()
    fams: dict[str, FamilyStats] = {f: FamilyStats() for f in FAMILIES}
    cases = ", ".join(f"SUM(CASE WHEN l.seconds <= {b} THEN 1 ELSE 0 END) AS le{i}" for i, b in enumerate(BUCKETS))
    with store.db.read() as db:
        queued = db.execute("SELECT b.endpoint, COUNT(*) AS n, SUM(CASE WHEN l.lease_until > ? THEN 1 ELSE 0 END) "
                            "AS running FROM lines l JOIN batches b ON b.id = l.batch_id WHERE l.status='pending' "
                            "AND b.status IN ('validating','in_progress','cancelling','finalizing') "
                            "GROUP BY b.endpoint", (now,)).fetchall()
        finished = db.execute(f"SELECT b.endpoint, l.status, COUNT(*) AS n, COUNT(l.seconds) AS timed, "
                              f"COALESCE(SUM(l.seconds), 0) AS total, {cases} FROM lines l JOIN batches b "
                              f"ON b.id = l.batch_id WHERE l.status IN ('done','failed') "
                              f"GROUP BY b.endpoint, l.status").fetchall()
        batches = {r["status"]: int(r["n"]) for r in
                   db.execute("SELECT status, COUNT(*) AS n FROM batches GROUP BY status").fetchall()}
    for r in queued:
        s = fams.setdefault(_family(r["endpoint"]), FamilyStats())
        s.queued += int(r["n"])
        s.running += int(r["running"] or 0)
    for r in finished:
        s = fams.setdefault(_family(r["endpoint"]), FamilyStats())
        if r["status"] == "done":
            s.done += int(r["n"])
        else:
            s.failed += int(r["n"])
        s.timed += int(r["timed"])
        s.seconds += float(r["total"])
        for i in range(len(BUCKETS)):
            s.buckets[i] += int(r[f"le{i}"] or 0)
    return QueueStats(fams, batches, store.workers(), now)
