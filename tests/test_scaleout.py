"""Past one machine: the job store on a real PostgreSQL, shared by API replicas and worker processes.

The store's rules are checked on both engines (claims with leases, exactly-once results, the
per-key round robin, migration of an older SQLite file). Then a deployment on this machine: two
`brushpen studio --no-worker` replicas and three `brushpen worker` processes on one database, a
300-line image batch, one worker SIGKILLed mid-batch and the database SIGKILLed and restarted; every
line comes out once, and each equals a single-process run of the same file with the same seeds.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from api_server import Server, make_home, make_store
from conftest import PYTHON, REPO, subprocess_env
from pg_server import postgres  # noqa: F401  (the session's PostgreSQL server)
from brushpen.generators.jobs import JobStore

IMAGES = "/v1/images/generations"


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def request(custom_id: str, body: dict, url: str = IMAGES) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return JobStore(tmp_path / "jobs.sqlite3")
    server = request.getfixturevalue("postgres")
    return JobStore(url=server.fresh_database(f"t_{tmp_path.name.lower()}"[:60]))


def make_batch(store: JobStore, n: int, user: str | None = None) -> str:
    data = jsonl([request(f"r{i}", {"model": "shapes", "seed": i}) for i in range(n)])
    f = store.add_file("in.jsonl", "batch", data)
    return store.create_batch(f.id, IMAGES, metadata={"user": user} if user else None).id


def test_a_claimed_line_is_leased_and_claimed_again_only_when_its_lease_runs_out(store: JobStore) -> None:
    batch = make_batch(store, 1)
    first = store.claim("w1", [IMAGES], lease_s=0.5)
    assert first is not None and (first.batch_id, first.idx, first.attempts) == (batch, 0, 0)
    assert store.claim("w2", [IMAGES], lease_s=0.5) is None, "a leased line was handed out twice"
    assert store.claim("w2", ["/v1/completions"], lease_s=0.5) is None, "a worker got a family it does not run"
    time.sleep(0.6)
    second = store.claim("w2", [IMAGES], lease_s=30)
    assert second is not None and second.idx == 0 and second.attempts == 1   # the dead worker's attempt counts
    # Both finish: the first result is kept, the second is dropped, and the batch is counted once.
    assert store.finish_line(batch, 0, 200, {"from": "w2"}, "w2", 0.01) is True
    assert store.finish_line(batch, 0, 200, {"from": "w1"}, "w1", 0.01) is True
    assert store.settle() == [(batch, "completed")] and store.settle() == []
    done = store.get_batch(batch)
    assert (done.status, done.completed, done.failed) == ("completed", 1, 0)
    out = [json.loads(x) for x in store.file_content(done.output_file_id).decode().splitlines()]
    assert [o["response"]["body"] for o in out] == [{"from": "w2"}]
    assert store.finalize(batch, "completed") is False, "a batch was finalized twice"


def test_the_workers_take_turns_over_fairness_keys(store: JobStore) -> None:
    """One client's huge batch does not starve another's small one: round robin over keys."""
    big = make_batch(store, 40, user="big-client")
    small = make_batch(store, 3, user="small-client")
    order = []
    for _ in range(10):
        c = store.claim("w", [IMAGES], lease_s=60)
        order.append({big: "big", small: "small"}[c.batch_id])
        store.finish_line(c.batch_id, c.idx, 200, {}, "w", 0.0)
    assert order[:6] == ["big", "small"] * 3 and order[6:] == ["big"] * 4
    # Two batches of one key share that key's turn: a third client is not outrun by splitting.
    second_big = make_batch(store, 5, user="big-client")
    third = make_batch(store, 2, user="third-client")
    keys = []
    for _ in range(4):
        c = store.claim("w", [IMAGES], lease_s=60)
        keys.append("third" if c.batch_id == third else "big")
        store.finish_line(c.batch_id, c.idx, 200, {}, "w", 0.0)
    assert keys.count("third") == 2 and second_big


def test_many_threads_claim_every_line_exactly_once(store: JobStore) -> None:
    batch = make_batch(store, 120)
    ran: list[int] = []
    guard = threading.Lock()

    def work(name: str) -> None:
        while (c := store.claim(name, [IMAGES], lease_s=60)) is not None:
            with guard:
                ran.append(c.idx)
            store.finish_line(c.batch_id, c.idx, 200, {"idx": c.idx}, name, 0.0)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(ran) == list(range(120))
    assert set(store.attempts(batch).values()) == {1}
    assert len(set(store.line_workers(batch).values())) >= 2, "one thread took every line"


def test_an_older_sqlite_store_is_migrated_in_place(tmp_path: Path) -> None:
    """A store written before leases existed keeps its files and batches, and gains the new columns."""
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE files (id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL,
            bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, content BLOB NOT NULL);
        CREATE TABLE lines (batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL,
            body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
            status_code INTEGER, response TEXT, PRIMARY KEY (batch_id, idx));
        INSERT INTO files VALUES ('file-old', 'batch', 'old.jsonl', 3, 1700000000, x'616263');""")
    db.commit()
    db.close()
    store = JobStore(path)
    assert store.file_content("file-old") == b"abc"
    batch = make_batch(store, 2)
    assert store.claim("w", [IMAGES], lease_s=60).batch_id == batch
    JobStore(path)   # a second open finds the migrations done
    versions = [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM schema_version")]
    assert versions == [1, 2]


# ---- a deployment on one machine: 2 replicas, 3 workers, 1 PostgreSQL ---------------------------

def start_worker(home: Path, weights: Path, url: str, shared: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = subprocess_env(BRUSHPEN_HOME=str(home), BRUSHPEN_WEIGHTS=str(weights), BRUSHPEN_OUTPUTS=str(shared))
    with open(log, "ab") as f:
        return subprocess.Popen([PYTHON, "-m", "brushpen.cli.main", "worker", "--jobs-url", url, "--threads", "1",
                                 "--poll", "0.2", *extra], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)


def counts(url: str, batch_id: str) -> dict:
    """The batch's progress as a replica reports it; None while the database is down (503)."""
    r = httpx.get(f"{url}/v1/batches/{batch_id}", timeout=30)
    return r.json() if r.status_code == 200 else None


def pixels(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


def test_two_replicas_and_three_workers_share_one_postgres(postgres, tmp_path: Path) -> None:  # noqa: F811
    url = postgres.fresh_database("deployment")
    make_home(tmp_path)
    weights = make_store(tmp_path)
    (weights / "gan" / "emoji64").symlink_to(REPO / "weights" / "gan" / "emoji64", target_is_directory=True)
    home, shared = tmp_path / "home", tmp_path / "shared-outputs"
    env = {"BRUSHPEN_JOBS_URL": url, "BRUSHPEN_OUTPUTS": str(shared)}
    replicas = [Server(home, weights, args=("--no-worker",), log=tmp_path / f"replica{i}.log", **env)
                for i in range(2)]
    workers: list[subprocess.Popen] = []
    try:
        for r in replicas:
            r.start()
        workers = [start_worker(home, weights, url, shared, tmp_path / f"worker{i}.log", "--lease", "3")
                   for i in range(3)]
        n = 300
        lines = [request(f"line-{i}", {"model": "emoji64", "n": 8, "seed": 5000 + i}) for i in range(n)]
        a, b = (r.client() for r in replicas)
        up = a.files.create(file=("deploy.jsonl", jsonl(lines)), purpose="batch")
        batch = b.batches.create(input_file_id=up.id, endpoint=IMAGES, completion_window="24h")

        def done_lines() -> int:
            c = counts(replicas[0].url, batch.id)
            return -1 if c is None else c["request_counts"]["completed"]

        start = time.time()
        while done_lines() < 30:
            assert time.time() - start < 180, "no progress"
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        while done_lines() < 100:
            assert time.time() - start < 240, "no progress after a worker was killed"
            time.sleep(0.05)
        postgres.kill()
        assert counts(replicas[1].url, batch.id) is None   # 503 while the database is down, not a crash
        time.sleep(1.0)
        postgres.start()
        while (c := counts(replicas[1].url, batch.id)) is None or c["status"] != "completed":
            assert time.time() - start < 400, f"the batch did not finish after the database restart: {c}"
            time.sleep(0.2)
        assert c["request_counts"] == {"total": n, "completed": n, "failed": 0}
        # The other replica serves the output file from the shared folder.
        out = [json.loads(x) for x in a.files.content(c["output_file_id"]).text.splitlines()]
        assert sorted(o["custom_id"] for o in out) == sorted(f"line-{i}" for i in range(n))
        assert (shared / "files" / f"{c['output_file_id']}.jsonl").is_file()

        pg = JobStore(url=url)
        attempts, ran_by = pg.attempts(batch.id), pg.line_workers(batch.id)
        # Only lines in flight at the worker's kill ran twice; the database restart lost no result.
        assert sum(attempts.values()) <= n + 2 and max(attempts.values()) <= 2
        assert len(set(ran_by.values())) == 3, "the lines were not split across the three workers"

        metrics = httpx.get(replicas[0].url + "/metrics", timeout=30).text
        assert re.search(r'brushpen_lines_total\{family="images",outcome="done"\} 300\.0', metrics)
        assert re.search(r'brushpen_queue_lines\{family="images"\} 0\.0', metrics)
        ages = [float(x) for x in re.findall(r'brushpen_worker_heartbeat_age_seconds\{[^}]*\} ([0-9.e+]+)', metrics)]
        assert len(ages) == 3 and sorted(ages)[1] < 10   # two live heartbeats; the killed worker's is stale

        # A single process on the default SQLite store, through the CLI, gives the same images.
        ref_home = tmp_path / "ref-home"
        ref_env = subprocess_env(BRUSHPEN_HOME=str(ref_home), BRUSHPEN_WEIGHTS=str(weights))
        ref_env.pop("BRUSHPEN_JOBS_URL", None)
        (tmp_path / "deploy.jsonl").write_bytes(jsonl(lines))
        cli = [PYTHON, "-m", "brushpen.cli.main"]
        ref_id = subprocess.run([*cli, "batch", "submit", str(tmp_path / "deploy.jsonl")], env=ref_env, cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([*cli, "worker", "--once", "--threads", "1"], env=ref_env, cwd=REPO, check=True,
                       capture_output=True, timeout=600)
        subprocess.run([*cli, "batch", "results", ref_id, "-o", str(tmp_path / "ref.jsonl")], env=ref_env, cwd=REPO,
                       check=True, capture_output=True)
        ref = {o["custom_id"]: o for o in map(json.loads, (tmp_path / "ref.jsonl").read_text().splitlines())}
        assert len(ref) == n
        for o in out:
            got, want = o["response"]["body"]["data"], ref[o["custom_id"]]["response"]["body"]["data"]
            assert len(got) == len(want) == 8
            for g, w in zip(got, want):
                assert np.array_equal(pixels(g["b64_json"]), pixels(w["b64_json"])), o["custom_id"]
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        for r in replicas:
            r.stop()
