"""Batch jobs against the real server: upload, run, poll, download in OpenAI's batch format; cancel;
bad files; and the crash test: SIGKILL the server mid-job, restart it, and the job finishes with
every line exactly once and each output equal to what an uninterrupted run of that line gives.
"""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import time
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from api_server import BRIEF, Server, make_home, make_store
from brushpen.generators.jobs import line_seed
from brushpen.safety import credentials


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batches")
    make_home(root)
    make_store(root)
    return root


@pytest.fixture(scope="module")
def server(root: Path):
    srv = Server(root / "home", root / "weights")
    srv.start()
    yield srv
    srv.stop()


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def line(custom_id: str, url: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def wait_for(client: openai.OpenAI, batch_id: str, until: tuple[str, ...], timeout: float = 240.0):
    start = time.time()
    while time.time() - start < timeout:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} stuck at {batch.status}: {batch.request_counts}")


def read_output(client: openai.OpenAI, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    records = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    by_id = {r["custom_id"]: r for r in records}
    assert len(by_id) == len(records), "a custom_id appears twice"
    return by_id


def test_image_batch_end_to_end(server: Server) -> None:
    client = server.client()
    url = "/v1/images/generations"
    lines = [line(f"img-{i}", url, {"model": "shapes", "prompt": "flag", "n": 2, "seed": 10 * i}) for i in range(3)]
    lines.append(line("no-seed", url, {"model": "shapes", "n": 1}))
    lines.append(line("bad-model", url, {"model": "no-such-model"}))
    lines.append(line("bad-field", url, {"model": "shapes", "colour": "red"}))
    up = client.files.create(file=("images.jsonl", jsonl(lines)), purpose="batch")
    assert up.object == "file" and up.purpose == "batch" and up.bytes == len(jsonl(lines))
    batch = client.batches.create(input_file_id=up.id, endpoint=url, completion_window="24h",
                                  metadata={"job": "test"})
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 6
    done = wait_for(client, batch.id, ("completed",))
    assert done.request_counts.completed == 4 and done.request_counts.failed == 2
    assert done.metadata == {"job": "test"} and done.completed_at >= done.created_at
    out, errors = read_output(client, done.output_file_id), read_output(client, done.error_file_id)
    assert set(out) == {"img-0", "img-1", "img-2", "no-seed"} and set(errors) == {"bad-model", "bad-field"}
    for i in range(3):
        rec = out[f"img-{i}"]
        assert rec["response"]["status_code"] == 200 and rec["error"] is None and rec["id"].startswith("batch_req_")
        for k, item in enumerate(rec["response"]["body"]["data"]):
            data = base64.b64decode(item["b64_json"])
            with Image.open(io.BytesIO(data)) as im:
                assert f"Seed: {10 * i + k}" in im.info["parameters"] and "Class: Flags" in im.info["parameters"]
            # every batch output carries a signed manifest (the server's CA: untrusted from this process)
            cred = credentials.read(data)
            assert cred["state"] == "valid-untrusted" and cred["ai_generated"] and cred["model"]["name"] == "shapes"
    # A line without a seed runs with one derived from the batch and the line.
    with Image.open(io.BytesIO(base64.b64decode(out["no-seed"]["response"]["body"]["data"][0]["b64_json"]))) as im:
        assert f"Seed: {line_seed(batch.id, 3)}," in im.info["parameters"]
    assert errors["bad-model"]["response"]["status_code"] == 404
    assert "no-such-model" in errors["bad-model"]["response"]["body"]["error"]["message"]
    assert errors["bad-field"]["response"]["status_code"] == 400
    assert "colour" in errors["bad-field"]["response"]["body"]["error"]["message"]
    assert client.batches.list().data[0].id == batch.id


def test_bad_batch_files_are_refused_at_upload(server: Server) -> None:
    client = server.client()
    ok = line("a", "/v1/completions", {"prompt": BRIEF})
    cases = {b"not json\n": "not JSON", jsonl([ok, ok]): "used twice",
             jsonl([{**ok, "url": "/v1/embeddings"}]): "cannot run in a batch",
             jsonl([{**ok, "method": "GET"}]): "POST", b"": "no requests", b"\xff\xfe\n": "UTF-8",
             b"[" * 100_000 + b"\n": "nested too deeply"}   # a RecursionError was a 500 (hardening, item 4)
    for data, words in cases.items():
        with pytest.raises(openai.BadRequestError, match=words):
            client.files.create(file=("in.jsonl", data), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("in.jsonl", jsonl([ok])), purpose="assistants")
    up = client.files.create(file=("in.jsonl", jsonl([ok])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="differs from the batch endpoint"):
        client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_keeps_the_lines_already_done(server: Server) -> None:
    client = server.client()
    url = "/v1/completions"
    lines = [line(f"c{i}", url, {"prompt": BRIEF, "max_tokens": 8, "seed": i}) for i in range(40)]
    up = client.files.create(file=("copy.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=up.id, endpoint=url, completion_window="24h")
    wait_for(client, batch.id, ("in_progress",))
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_for(client, batch.id, ("cancelled",))
    assert done.cancelled_at and done.request_counts.completed < 40
    out = read_output(client, done.output_file_id)
    assert len(out) == done.request_counts.completed
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.batches.cancel(batch.id)


def test_a_killed_server_resumes_the_job_with_every_line_exactly_once(root: Path, server: Server) -> None:
    server.stop()   # this test runs its own server, which it kills
    srv = Server(root / "home", root / "weights", log=root / "crash.log")
    srv.start()
    client = srv.client()
    url = "/v1/chat/completions"
    n_lines = 7
    lines = [line(f"r{i}", url, {"model": "smollm2-135m", "max_tokens": 10, "n": 2,
                                 "messages": [{"role": "user", "content": f"{BRIEF}, edition {i}"}],
                                 **({"seed": 1000 + i} if i % 3 == 0 else {})}) for i in range(n_lines)]
    up = client.files.create(file=("chat.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=up.id, endpoint=url, completion_window="24h")
    start = time.time()
    while client.batches.retrieve(batch.id).request_counts.completed < 2:
        assert time.time() - start < 180, "the batch made no progress"
        time.sleep(0.05)
    srv.kill()
    killed_at = sqlite_counts(root, batch.id)
    assert 2 <= killed_at["done"] < n_lines, "the job finished before the kill; make it longer"

    restart_s = srv.start()
    done = wait_for(client, batch.id, ("completed",))
    assert done.request_counts.completed == n_lines and done.request_counts.failed == 0
    out = read_output(client, done.output_file_id)
    assert sorted(out) == sorted(f"r{i}" for i in range(n_lines))
    # No line that was done before the kill ran again; at most the one in flight ran twice.
    attempts = sqlite_counts(root, batch.id)["attempts"]
    assert sum(attempts.values()) <= n_lines + 1 and max(attempts.values()) <= 2
    # Each output equals an uninterrupted run of its line: the same request with the same seed.
    for i, ln in enumerate(lines):
        body = {**ln["body"], "seed": ln["body"].get("seed", line_seed(batch.id, i))}
        direct = httpx.post(srv.url + url, json=body, timeout=120).json()
        got = out[f"r{i}"]["response"]["body"]
        assert [c["message"]["content"] for c in got["choices"]] == \
            [c["message"]["content"] for c in direct["choices"]], f"line {i}"
    srv.stop()
    # Generous: the point is that a restart does not redo the job's work before answering; on a
    # loaded 2-core machine the start itself measured up to 35 s. Start times are benchmarked.
    assert restart_s < 90


def sqlite_counts(root: Path, batch_id: str) -> dict:
    db = sqlite3.connect(root / "home" / "jobs" / "jobs.sqlite3")
    try:
        rows = db.execute("SELECT idx, status, attempts FROM lines WHERE batch_id=?", (batch_id,)).fetchall()
    finally:
        db.close()
    return {"done": sum(1 for _, s, _ in rows if s == "done"), "attempts": {i: a for i, _, a in rows}}


def test_batches_made_in_one_second_run_in_creation_order(tmp_path: Path) -> None:
    """Ids are random; batches created within one second of each other still start oldest first
    (hardening, item 8)."""
    from brushpen.generators.jobs import JobStore

    store = JobStore(tmp_path / "jobs.db")
    body = jsonl([line("a", "/v1/completions", {"prompt": BRIEF})])
    made = []
    for _ in range(12):   # well within one second; 12 random ids are out of order with near certainty
        f = store.add_file("in.jsonl", "batch", body)
        made.append(store.create_batch(f.id, "/v1/completions").id)
    assert len({store.get_batch(b).created_at for b in made}) <= 2
    started = []
    for _ in made:
        claim = store.claim("test-worker", ["/v1/completions"], lease_s=60)
        started.append(claim.batch_id)
        store.finalize(claim.batch_id, "completed")
    assert started == made
