"""Fine-tuning jobs against the real server, in OpenAI's shapes: upload a zip, start a job, follow its
events to success, then use the adapter it made as `base:suffix`; cancel a job mid-way; and bad
uploads and bodies answer 400/404 with a message. The base is a tiny random detector (the fastest
of the three families to train); the GAN and text trainers follow the same contract and have
their own tests.
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import httpx
import numpy as np
import openai
import pytest
import torch
from test_detector import TINY, fake_of, texture

from api_server import Server
from brushpen.safety.detector import Calibration, Detector, save_detector


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def training_zip(n: int = 24, seed: int = 0, families: tuple[str, ...] = ()) -> bytes:
    """n reals and n fakes; with `families`, the fakes in fake/FAMILY/ folders, one generator each."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"real/{i:03d}.png", _png(texture(rng)))
            kind = i % len(families) if families else 1
            folder = f"fake/{families[kind]}" if families else "fake"
            zf.writestr(f"{folder}/{i:03d}.png", _png(fake_of(texture(rng), kind)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ftjobs")
    torch.manual_seed(0)
    save_detector(Detector(TINY, Calibration(temperature=1.0, t_real=0.4, t_fake=0.6)),
                  root / "weights" / "safety" / "detector")
    srv = Server(root / "home", root / "weights")
    srv.start()
    yield srv
    srv.stop()


def wait_job(srv: Server, job_id: str, until: tuple[str, ...], timeout: float = 300.0) -> dict:
    start = time.time()
    while time.time() - start < timeout:
        job = httpx.get(f"{srv.url}/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck at {job['status']}")


def test_a_job_trains_an_adapter_that_the_checker_then_serves(server: Server) -> None:
    client = server.client()
    f = client.files.create(file=("data.zip", training_zip()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="detector", training_file=f.id, suffix="newgen",
                                         hyperparameters={"steps": 30, "batch": 8, "replay": 0.0, "rank": 2,
                                                          "snap": 10})
    assert job.status in ("validating_files", "running") and job.model == "detector"
    done = wait_job(server, job.id, ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"] == "detector:newgen"
    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    losses = [e.data["train_loss"] for e in events if e.data and e.data.get("train_loss") is not None]
    assert losses and all(np.isfinite(losses))
    assert events[0].message.startswith("done: adapter detector:newgen")   # newest first
    steps = [e.data["step"] for e in reversed(events) if e.data and "step" in e.data]
    assert steps == sorted(steps) and steps[-1] == 30
    # Nothing a client sees maps the server's disk (hardening, item 3).
    seen = json.dumps(done) + json.dumps([e.model_dump() for e in events])
    assert str(server.store) not in seen and str(server.home) not in seen
    # A fine-tuning job is not a batch, and a batch list does not show it.
    assert all(b.id != job.id for b in client.batches.list().data)
    assert job.id in [j.id for j in client.fine_tuning.jobs.list().data]

    # The adapter serves at once under its new name, with scores of its own.
    img = base64.b64encode(_png(fake_of(texture(np.random.default_rng(9)), 1))).decode()
    scores = {}
    for model in ("detector", "detector:newgen"):
        r = httpx.post(f"{server.url}/v1/detections", json={"model": model, "images": [
            {"name": "x.png", "b64_json": img}]}, timeout=120)
        assert r.status_code == 200, r.text
        scores[model] = r.json()["data"][0]["score"]
    assert scores["detector"] != scores["detector:newgen"]


def test_a_running_job_can_be_cancelled(server: Server) -> None:
    client = server.client()
    f = client.files.create(file=("data.zip", training_zip(16, seed=1)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="detector", training_file=f.id, suffix="long",
                                         hyperparameters={"steps": 100000, "batch": 8, "replay": 0.0})
    start = time.time()
    while not [e for e in client.fine_tuning.jobs.list_events(job.id).data if e.data]:
        assert time.time() - start < 120, "the job never reported a step"
        time.sleep(0.2)
    client.fine_tuning.jobs.cancel(job.id)
    done = wait_job(server, job.id, ("cancelled", "succeeded", "failed"), timeout=120)
    assert done["status"] == "cancelled" and done["fine_tuned_model"] is None
    assert "long" not in [a.split(":")[1] for a in _adapters(server)]


def _adapters(server: Server) -> list[str]:
    from brushpen.adapters import list_adapters

    return [f"detector:{a}" for a in list_adapters(server.store / "safety" / "detector")]


def test_bad_uploads_and_bodies_are_refused_with_a_message(server: Server) -> None:
    client = server.client()
    bad_zip = io.BytesIO()
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("../escape.png", b"x")
    cases = {("data.zip", b"not a zip"): "not a readable zip", ("data.zip", bad_zip.getvalue()): "'..'",
             ("data.jsonl", b"{\"brief\": \"x\"}\nnot json\n"): "line 1",
             ("data.jsonl", b"[1, 2]\n"): "line 1", ("data.csv", b"a,b\n"): ".jsonl",
             ("data.jsonl", b"\n\n"): "no examples",
             ("data.jsonl", b"[" * 100_000 + b"\n"): "nested too deeply"}   # was a 500 (RecursionError)
    for (name, data), words in cases.items():
        with pytest.raises(openai.BadRequestError, match=words):
            client.files.create(file=(name, data), purpose="fine-tune")
    ok = client.files.create(file=("data.zip", training_zip(4)), purpose="fine-tune")
    text = client.files.create(file=("copy.jsonl", json.dumps({"brief": "b", "copy": "c"}).encode()),
                               purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="unknown hyperparameters learning_rate"):
        client.fine_tuning.jobs.create(model="detector", training_file=ok.id, suffix="x",
                                       hyperparameters={"learning_rate": 1})
    with pytest.raises(openai.BadRequestError, match="threads"):   # server-side knobs stay server-side
        client.fine_tuning.jobs.create(model="detector", training_file=ok.id, suffix="x",
                                       hyperparameters={"threads": 2})
    with pytest.raises(openai.BadRequestError, match="takes a .zip"):
        client.fine_tuning.jobs.create(model="detector", training_file=text.id, suffix="x")
    # the trainer's own checks run when the job is created, not later in the worker
    for hyper, words in (({"steps": 0}, "--steps must be >= 1"), ({"replay": 1.5}, "share in"),
                         ({"steps": "many"}, "bad hyperparameters")):
        with pytest.raises(openai.BadRequestError, match=words):
            client.fine_tuning.jobs.create(model="detector", training_file=ok.id, suffix="x", hyperparameters=hyper)
    with pytest.raises(openai.BadRequestError, match="too small"):   # the nested auto settings reach the check
        client.fine_tuning.jobs.create(model="detector", training_file=ok.id, suffix="x",
                                       hyperparameters={"auto": {"budget_s": 1}})
    with pytest.raises(openai.BadRequestError, match="bad adapter name"):
        client.fine_tuning.jobs.create(model="detector", training_file=ok.id, suffix="../x")
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.fine_tuning.jobs.create(model="nope", training_file=ok.id, suffix="x")
    with pytest.raises(openai.NotFoundError, match="no file"):
        client.fine_tuning.jobs.create(model="detector", training_file="file-missing", suffix="x")
    with pytest.raises(openai.NotFoundError, match="no fine-tuning job"):
        client.fine_tuning.jobs.retrieve("ftjob-missing")


def test_a_federated_job_trains_a_detector_across_sites(server: Server) -> None:
    """hyperparameters.federated: the zip split into sites (each its own process, over Flower) that
    train one new detector; one event per round with the global AUC and each site's."""
    client = server.client()
    f = client.files.create(file=("data.zip", training_zip(40, seed=2, families=("bilinear", "nearest"))),
                            purpose="fine-tune")
    for fed, words in (({"sites": 0}, "sites must be"), ({"partition": "random"}, "partition must be"),
                       ({"rounds": "ten"}, "rounds must be int"), ({"strategy": "fedsgd"}, "unknown strategy"),
                       ({"budget": 1}, "federated takes")):
        with pytest.raises(openai.BadRequestError, match=words):
            client.fine_tuning.jobs.create(model="detector", training_file=f.id, suffix="fed",
                                           hyperparameters={"federated": fed})
    job = client.fine_tuning.jobs.create(model="detector", training_file=f.id, suffix="fed-api", hyperparameters={
        "federated": {"sites": 2, "partition": "by-family", "rounds": 2, "local_steps": 20}})
    done = wait_job(server, job.id, ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"] == "fed-api" and done["metrics"]["rounds"] == 2
    events = list(reversed(client.fine_tuning.jobs.list_events(job.id, limit=1000).data))
    rounds = [e.data for e in events if e.data and "round" in e.data]
    assert [r["round"] for r in rounds] == [1, 2]
    assert set(rounds[-1]["site_auc"]) == {"site1", "site2"} and 0 <= rounds[-1]["global_auc"] <= 1
    assert any("site1:" in e.message and "(bilinear)" in e.message for e in events)   # one generator per site
    assert (server.store / "safety" / "fed-api" / "federation.json").exists()
    with pytest.raises(openai.BadRequestError, match="already holds a detector 'fed-api'"):
        client.fine_tuning.jobs.create(model="detector", training_file=f.id, suffix="fed-api",
                                       hyperparameters={"federated": {"sites": 2}})
