"""Batch throughput against the number of worker processes, and what the PostgreSQL job store costs.

What it measures, side by side in one run, on a PostgreSQL 15 server it starts itself (Debian's
binaries, a temporary data directory, fsync on):
- lines/s of one image batch (`--lines` lines of `emoji64`, `--n` images each, fixed seeds) with 1, 2
  and 4 `brushpen worker` processes of one torch thread each, on PostgreSQL; and with one worker on
  the default SQLite store. Two figures per run: "busy", from the first line started to the last
  finished (the store's own timestamps; what the workers sustain), and "wall", from submitting to
  the batch's completion, which adds the workers' start (torch import, the model's load).
- the store's overhead per line: claim + finish + settle check of an empty line, by one process,
  on SQLite and on PostgreSQL (loopback), median over `--store-lines` lines; and the store's
  ceiling, the lines/s of empty lines that 8 claimers at once get through, which bounds how many
  workers one database can feed.
Each arm runs `--reps` times, interleaved, and the median counts. The cores of this machine bound
the scaling: past them, more workers share the same cores.

    .venv/bin/python benchmarks/scaleout.py --lines 300 --n 4 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pg_server import PostgresServer  # noqa: E402  (the tests' PostgreSQL starter)

from brushpen.generators.jobs import JobStore  # noqa: E402

IMAGES = "/v1/images/generations"


def batch_file(lines: int, n: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": IMAGES,
                               "body": {"model": "emoji64", "n": n, "seed": 100 + i}}) + "\n"
                   for i in range(lines)).encode()


def run_arm(store: JobStore, env: dict, workers: int, data: bytes) -> dict:
    """Submit the batch, start `workers` processes with --once, wait; returns lines/s."""
    f = store.add_file("bench.jsonl", "batch", data)
    start = time.perf_counter()
    batch = store.create_batch(f.id, IMAGES)
    procs = [subprocess.Popen([sys.executable, "-m", "brushpen.cli.main", "worker", "--once", "--threads", "1",
                               "--poll", "0.1", "--log-level", "warning"], cwd=REPO, env=env)
             for _ in range(workers)]
    for p in procs:
        if p.wait(3600) != 0:
            raise RuntimeError(f"a worker exited with {p.returncode}")
    wall = time.perf_counter() - start
    b = store.get_batch(batch.id)
    assert b.status == "completed" and b.completed == b.total, (b.status, b.completed, b.failed)
    with store.db.read() as db:
        row = db.execute("SELECT MIN(started_at) AS s, MAX(finished_at) AS e, COUNT(DISTINCT worker_id) AS w "
                         "FROM lines WHERE batch_id=?", (batch.id,)).fetchone()
    return {"busy_lps": b.total / (row["e"] - row["s"]), "wall_lps": b.total / wall, "workers_used": row["w"]}


def store_overhead(store: JobStore, lines: int) -> float:
    """Median seconds of claim + finish (+ the settle that finishing a batch triggers) per line."""
    data = "".join(json.dumps({"custom_id": f"e{i}", "method": "POST", "url": IMAGES, "body": {}}) + "\n"
                   for i in range(lines)).encode()
    store.create_batch(store.add_file("empty.jsonl", "batch", data).id, IMAGES)
    times = []
    while True:
        t0 = time.perf_counter()
        c = store.claim("bench", [IMAGES], 60)
        if c is None:
            break
        if store.finish_line(c.batch_id, c.idx, 200, {"ok": True}, "bench", 0.0):
            store.settle()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def store_ceiling(store: JobStore, lines: int, threads: int) -> float:
    """Lines/s the store alone sustains: `threads` claimers running empty lines at once (one process;
    psycopg and sqlite3 release the GIL while they wait on the database)."""
    data = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": IMAGES, "body": {}}) + "\n"
                   for i in range(lines)).encode()
    batch = store.create_batch(store.add_file("ceiling.jsonl", "batch", data).id, IMAGES)

    def work(name: str) -> None:
        while (c := store.claim(name, [IMAGES], 60)) is not None:
            if store.finish_line(c.batch_id, c.idx, 200, {"ok": True}, name, 0.0):
                store.settle()

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    assert store.get_batch(batch.id).completed == lines
    return lines / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--n", type=int, default=4, help="images per line")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--store-lines", type=int, default=500)
    ap.add_argument("--store-only", action="store_true", help="only the store's overhead and ceiling")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="brushpen-pg-"))
    home = root / "home"
    pg = PostgresServer(root)
    pg.init()
    pg.start()
    try:
        base_env = {**os.environ, "BRUSHPEN_HOME": str(home), "BRUSHPEN_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        base_env.pop("BRUSHPEN_OUTPUTS", None)
        sqlite_env = {k: v for k, v in base_env.items() if k != "BRUSHPEN_JOBS_URL"}
        pg_env = {**base_env, "BRUSHPEN_JOBS_URL": pg.url}
        stores = {"sqlite": (JobStore(home / "jobs" / "jobs.sqlite3"), sqlite_env),
                  "postgres": (JobStore(url=pg.url), pg_env)}
        data = batch_file(args.lines, args.n)
        arms = [] if args.store_only else [("postgres", w) for w in map(int, args.workers.split(","))] + [("sqlite", 1)]
        runs: dict[str, list[dict]] = {f"{s}:{w}": [] for s, w in arms}
        for rep in range(args.reps):
            for s, w in arms:
                store, env = stores[s]
                r = run_arm(store, env, w, data)
                runs[f"{s}:{w}"].append(r)
                print(f"rep {rep} {s} x{w}: busy {r['busy_lps']:.1f} lines/s, wall {r['wall_lps']:.1f} lines/s, "
                      f"{r['workers_used']} workers ran lines", flush=True)
        overhead = {s: store_overhead(store, args.store_lines) for s, (store, _) in stores.items()}
        ceiling = {s: store_ceiling(store, args.store_lines * 2, 8) for s, (store, _) in stores.items()}
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    one = statistics.median(r["busy_lps"] for r in runs["postgres:1"]) if "postgres:1" in runs else 1.0
    print(f"\n{os.cpu_count()} cores; {args.lines} lines of emoji64 x{args.n} images; 1 torch thread per worker; "
          f"medians of {args.reps}\n")
    print("| store | workers | busy lines/s | speed-up | wall lines/s (with worker start) |")
    print("|---|---|---|---|---|")
    table = {}
    for s, w in arms:
        busy = statistics.median(r["busy_lps"] for r in runs[f"{s}:{w}"])
        wall = statistics.median(r["wall_lps"] for r in runs[f"{s}:{w}"])
        table[f"{s}:{w}"] = {"busy_lps": busy, "wall_lps": wall}
        print(f"| {s} | {w} | {busy:.1f} | {busy / one:.2f}x | {wall:.1f} |")
    print("\n| store | claim + finish per line, 1 client (median) | lines/s of empty lines, 8 clients |")
    print("|---|---|---|")
    for s, v in overhead.items():
        print(f"| {s} | {v * 1000:.2f} ms | {ceiling[s]:.0f} |")
    if args.out:
        args.out.write_text(json.dumps({"arms": table, "runs": runs, "overhead_s": overhead, "ceiling_lps": ceiling,
                                        "cores": os.cpu_count(), "lines": args.lines, "n": args.n}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
