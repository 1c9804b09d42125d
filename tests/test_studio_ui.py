"""The studio against the real `brushpen studio` server, driven with `gradio_client`: images (GAN and a
linked diffusers pipeline), seed walks, streamed copy, history and PNG info with re-runs, the models'
cards, clear messages for bad input, separate queues for copy and images, and the UI login when a
key is set. The diffusers pipeline also goes through the REST API."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from api_server import BRIEF, Server, make_home, make_store
from brushpen.store import link_model
from conftest import save_tiny_sd_pipeline

# Images-tab inputs in order: model, prompt, negative, seed, n, psi, mix seed, crossover, steps,
# guidance, width, height, scheduler, backend. Every input is passed: the studio's events are
# "undocumented" (kept out of the API info Gradio embeds in its pages), so the client knows no defaults.
GAN = ("shapes", "flag", "", 5, 3, 0.7, -1, 4, 20, 7.5, 512, 512, "default", "torch")
COPY_TAIL = ("torch", "smollm2-135m", False, 4, "en")   # the Copy tab's backend, model, deliberate, drafts, language


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("studio")
    store = make_store(root)
    link_model(save_tiny_sd_pipeline(root / "tiny-sd"), "diffusers", "tiny", root=store)
    save_tiny_detector(store / "safety" / "detector")
    srv = Server(make_home(root), store, ui=True)
    srv.start(120)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url + "/", verbose=False)


def save_tiny_detector(folder: Path) -> None:
    import torch
    from test_detector import TINY

    from brushpen.safety.detector import Calibration, Detector, save_detector

    torch.manual_seed(0)
    save_detector(Detector(TINY, Calibration(temperature=1.0, t_real=0.4, t_fake=0.6)), folder)


def gallery_paths(gallery: list) -> list[str]:
    return [g["image"]["path"] if isinstance(g["image"], dict) else g["image"] for g in gallery]


def test_images_tab_generates_records_and_reads_back(client: Client, server: Server) -> None:
    gallery, zipped, status, first_seed = client.predict(*GAN, api_name="/generate_images")
    paths = gallery_paths(gallery)
    assert len(paths) == 3 and "seeds 5–7" in status and "class Flags" in status and first_seed == 5
    assert [g["caption"] for g in gallery] == ["seed 5", "seed 6", "seed 7"]
    import zipfile

    with zipfile.ZipFile(zipped) as zf:
        assert len(zf.namelist()) == 3
    text, settings = client.predict(handle_file(paths[1]), api_name="/png_info")
    assert "Seed: 6" in text and "Class: Flags" in text and settings["seed"] == 6
    # The history keeps every image with its settings, on the server's disk.
    index = (server.home / "history" / "index.jsonl").read_text().splitlines()
    seeds = [json.loads(line)["settings"]["seed"] for line in index if '"image"' in line]
    assert {5, 6, 7} <= set(seeds)
    recent, _ = client.predict(api_name="/_recent")
    assert len(recent) >= 3

    # "Send to Images" sets every control to those settings; generating again gives the same pixels.
    controls = [v["value"] if isinstance(v, dict) and "value" in v else v
                for v in client.predict(settings, api_name="/rerun")[:13]] + ["torch"]
    assert controls[:5] == ["shapes", "Flags", "", 6, 1]
    again, *_ = client.predict(*controls, api_name="/generate_images")
    with Image.open(gallery_paths(again)[0]) as a, Image.open(paths[1]) as b:
        assert a.tobytes() == b.tobytes()


def test_bad_input_is_a_message(client: Client) -> None:
    with pytest.raises(Exception, match="no class matches the prompt 'spaceship'.*Circles, Squares, Flags"):
        client.predict("shapes", "spaceship", *GAN[2:], api_name="/generate_images")
    with pytest.raises(Exception, match="brief is empty"):
        client.predict("  ", "headline", "", "", 2, 0.3, 0.9, 50, 1.1, 8, 1, *COPY_TAIL, api_name="/write_copy")
    gallery, *_ = client.predict(*GAN, api_name="/generate_images")   # still serving
    assert len(gallery) == 3


def test_copy_streams_into_one_box_per_variant(client: Client) -> None:
    from brushpen.generators.copy import CopyRequest, generate_copy

    job = client.submit(BRIEF, "headline", "", "", 2, 0.3, 0.9, 50, 1.1, 12, 7, *COPY_TAIL, api_name="/write_copy")
    outputs = list(job)
    assert len(outputs) > 3  # streamed: many partial updates before the last
    final = outputs[-1]
    texts = [final[i]["value"] for i in range(2)]
    assert all(texts) and final[2]["visible"] is False and "seed 7" in final[-1]
    direct = generate_copy(CopyRequest(brief=BRIEF, kind="headline", n=2, max_new_tokens=12, seed=7,
                                       repetition_penalty=1.1, deliberate=False, model="smollm2-135m"))  # as sent
    assert texts == direct.texts


def test_deliberate_copy_shows_the_picks_and_the_misses(client: Client) -> None:
    from brushpen.generators.copy import CopyRequest, generate_copy

    args = (BRIEF, "email-subject", "", "", 2, 0.7, 0.9, 50, 1.05, 24, 5, "torch", "smollm2-135m", True, 3, "en")
    outputs = list(client.submit(*args, api_name="/write_copy"))
    assert "drafting 6 candidates" in outputs[0][-1]
    final = outputs[-1]
    direct = generate_copy(CopyRequest(brief=BRIEF, kind="email-subject", n=2, temperature=0.7, max_new_tokens=24,
                                       seed=5, draft=3, model="smollm2-135m"))
    assert [final[i]["value"] for i in range(len(direct.texts))] == direct.texts
    assert f"{len(direct.variants)} variant(s), seed 5" in final[-1]
    for v in direct.rejected:   # a run that came up short names each miss and the check it failed
        assert f"rejected: {v.text!r}" in final[-1]


def test_seed_walk_and_diffusers_model(client: Client, server: Server) -> None:
    walk = client.predict("shapes", 1, 2, 4, 0.7, "", "WebP", api_name="/seed_walk")
    with Image.open(walk) as im:
        assert im.format == "WEBP" and im.n_frames == 6   # 4 there, 2 back
    gif = client.predict("shapes", 1, 2, 3, 0.7, "flag", "GIF", api_name="/seed_walk")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 4
    walks = [json.loads(line) for line in (server.home / "history" / "index.jsonl").read_text().splitlines()
             if '"walk"' in line]
    assert walks[-1]["settings"]["format"] == "gif" and walks[-1]["settings"]["prompt"] == "flag"
    recent, _ = client.predict(api_name="/_recent")
    assert recent[0]["caption"] == "shapes · walk 1→2" and gallery_paths(recent)[0].endswith(".gif")
    sd = ("diffusers/tiny", "a red lighthouse", "blurry", 3, 1, 1.0, -1, 4, 2, 5.0, 32, 32, "euler-a", "torch")
    gallery, _, status, _ = client.predict(*sd, api_name="/generate_images")
    text, settings = client.predict(handle_file(gallery_paths(gallery)[0]), api_name="/png_info")
    assert text.startswith("```\na red lighthouse\nNegative prompt: blurry\nSteps: 2, Sampler: euler-a")
    assert settings["model"] == "diffusers/tiny" and settings["width"] == 32
    # The REST API passes the prompt through to the same pipeline: the same seed, the same pixels.
    r = httpx.post(server.url + "/v1/images/generations", timeout=120,
                   json={"model": "diffusers/tiny", "prompt": "a red lighthouse", "n": 1, "seed": 3,
                         "response_format": "b64_json", "size": "32x32"})
    assert r.status_code == 200, r.text
    api_img = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
    assert api_img.size == (32, 32) and api_img.info["parameters"].startswith("a red lighthouse\nSteps: 20")


def test_ui_login_asks_for_the_key(tmp_path: Path) -> None:
    srv = Server(make_home(tmp_path), make_store(tmp_path), api_key="k-123", ui=True)
    srv.start(120)
    try:
        assert httpx.get(srv.url + "/config", timeout=10).status_code == 401
        with pytest.raises(Exception):
            Client(srv.url + "/", verbose=False)
        Client(srv.url + "/", auth=("anyone", "k-123"), verbose=False)   # logs in with the key
    finally:
        srv.stop()


def test_images_do_not_wait_for_a_running_copy_job(client: Client) -> None:
    """Copy and images have their own queues (concurrency_id): a batch of images finishes while a
    long copy job is still writing."""
    import time

    job = client.submit(BRIEF, "description", "", "", 3, 0.3, 0.9, 50, 1.1, 96, 11, *COPY_TAIL, api_name="/write_copy")
    deadline = time.monotonic() + 60
    while len(job.outputs()) < 2 and time.monotonic() < deadline:   # the model has started writing
        time.sleep(0.05)
    assert not job.done()
    gallery, *_ = client.predict(*GAN, api_name="/generate_images")
    assert len(gallery) == 3 and not job.done(), "the images waited for the copy job"
    final = job.result()
    assert "3 variant(s), seed 11" in final[-1]


def test_models_tab_shows_cards_and_metrics(client: Client, server: Server) -> None:
    folder = server.store / "gan" / "shapes"
    (folder / "card.md").write_text("# shapes\n\nA tiny test GAN.\n")
    (folder / "metrics.json").write_text('{"fid": 321.5, "kimg": 0.1}')
    card, metrics = client.predict("gan/shapes", api_name="/model_card")
    assert card.startswith("# shapes") and metrics == {"fid": 321.5, "kimg": 0.1}
    card, _ = client.predict("diffusers/tiny", api_name="/model_card")
    assert card == "_(this model has no card)_"


def test_models_tab_shows_the_job_queue_and_its_worker(client: Client, server: Server) -> None:
    batches, workers, summary = client.predict(api_name="/job_queue")
    rows = workers["data"] if isinstance(workers, dict) else workers
    assert len(rows) == 1 and rows[0][1] == "images,text,finetune", rows   # the studio's own worker
    assert float(rows[0][4]) < 60, "its heartbeat is stale"
    assert re.match(r"\d+ open jobs, \d+ lines to run, 1 workers on sqlite:///", summary), summary


def test_export_tab_exports_and_shows_the_report(client: Client, server: Server) -> None:
    rows, summary = client.predict("shapes", True, False, api_name="/export")
    table = rows["data"] if isinstance(rows, dict) else rows
    variants = {r[0] for r in table}
    assert {"onnx", "onnx-int8"} <= variants, variants
    assert "onnx-int8" in summary and "Backends: torch, onnx, onnx-int8" in summary
    edge = server.store / "gan" / "shapes" / "edge"
    assert (edge / "model.onnx").exists() and (edge / "model.int8.onnx").exists()
    with pytest.raises(Exception, match="not in the list of choices"):   # gradio checks the dropdown
        client.predict("nope", True, False, api_name="/export")


NO_FED = (False, 4, "iid", 10, 50, "fedavg", 0)   # the Federated section's inputs, switched off


def wait_for_job(client: Client, job_id: str, status: str, timeout: float = 300) -> tuple:
    """Poll the tab's status until the job succeeds; the last poll's outputs."""
    import time

    shown: tuple = (status,)
    deadline = time.monotonic() + timeout
    while "succeeded" not in shown[0] and time.monotonic() < deadline:
        assert "failed" not in shown[0], shown[0]
        time.sleep(0.5)
        shown = tuple(client.predict(job_id, api_name="/finetune_status"))
    return shown


def test_finetune_tab_runs_a_job_to_an_adapter(client: Client, server: Server, tmp_path: Path) -> None:
    import zipfile

    import numpy as np
    from test_detector import fake_of, texture

    rng = np.random.default_rng(0)
    data = tmp_path / "mine.zip"
    with zipfile.ZipFile(data, "w") as zf:
        for i in range(16):
            for kind, im in (("real", texture(rng)), ("fake", fake_of(texture(rng), 1))):
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                zf.writestr(f"{kind}/{i}.png", buf.getvalue())
    label = "Detector: detector (zip with fake/ and real/)"
    with pytest.raises(Exception, match="upload the training data"):
        client.predict(label, None, "ui-made", 2, 20, False, 10, 0, *NO_FED, api_name="/start_finetune")
    job_id, status, *_ = client.predict(label, handle_file(str(data)), "ui-made", 2, 20, False, 10, 0, *NO_FED,
                                        api_name="/start_finetune")
    assert job_id.startswith("ftjob-") and job_id in status
    status, plot, log, _, _, _ = wait_for_job(client, job_id, status)
    assert "Adapter: `detector:ui-made`" in status
    points = plot["value"]["data"] if isinstance(plot, dict) and "value" in plot else plot
    assert points, "no loss points reached the plot"
    # The same job is visible to the REST API, and the adapter to the store listing.
    job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == "detector:ui-made"
    adapters = client.predict(api_name="/adapters")
    rows = adapters["data"] if isinstance(adapters, dict) else adapters
    assert ["detector", "detector:ui-made"] in [list(r) for r in rows]

    # Auto: a budget instead of settings; the trials show up as a live table and a plot, then the best
    # trial's adapter and the importances.
    job_id, status, *_ = client.predict(label, handle_file(str(data)), "ui-auto", 2, 20, True, 2, 3, *NO_FED,
                                        api_name="/start_finetune")
    status, _, _, table, points, _ = wait_for_job(client, job_id, status)
    assert "Adapter: `detector:ui-auto`" in status
    rows = table["data"] if isinstance(table, dict) else table
    assert [r[0] for r in rows] == [0, 1, 2] and rows[0][3].startswith("lr 0.005, rank 2")
    values = points["value"]["data"] if isinstance(points, dict) and "value" in points else points
    assert values, "no trial reached the plot"
    job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}").json()
    assert job["hyperparameters"]["auto"]["budget_s"] == 120 and job["metrics"]["trials"] == 3

    # Federated: the zip split into sites (fake/GENERATOR/ folders are the families), AUC per round
    # for the global model and each site, and a new detector in the store.
    fed_zip = tmp_path / "fed.zip"
    with zipfile.ZipFile(fed_zip, "w") as zf:
        for i in range(40):
            fake = f"fake/{('bilinear', 'nearest')[i % 2]}"
            for kind, im in (("real", texture(rng)), (fake, fake_of(texture(rng), i % 2))):
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                zf.writestr(f"{kind}/{i}.png", buf.getvalue())
    job_id, status, *_ = client.predict(label, handle_file(str(fed_zip)), "ui-fed", 2, 0, False, 10, 0, True, 2,
                                        "by-family", 2, 20, "fedavg", 0, api_name="/start_finetune")
    status, *_, rounds = wait_for_job(client, job_id, status)
    assert "Detector: `ui-fed`" in status
    rows = rounds["value"]["data"] if isinstance(rounds, dict) and "value" in rounds else rounds
    rows = rows["data"] if isinstance(rows, dict) else rows
    assert {r[2] for r in rows} == {"global", "site1", "site2"} and {r[0] for r in rows} == {1, 2}
