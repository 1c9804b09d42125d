"""Copy on an OpenAI-compatible engine (`brushpen/text/engine.py`), against a real one: `transformers
serve` (the engine Hugging Face ships in transformers) serving the converted SmolLM2 base. brushpen
drafts through it and keeps its own checks, pick, streaming and errors; the API and the CLI take
`engine/ID` like any copy model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from api_server import Server, make_home, make_store
from brushpen.cli.main import main
from brushpen.errors import BadParameter, EngineUnavailable
from brushpen.generators.copy import CopyRequest, copy_models, generate_copy, stream_copy
from brushpen.text import engine
from conftest import apply_copy_events
from engine_server import free_port, sampling_folder, start_engine, stop_engine

BRIEF = "A neighbourhood bakery that bakes sourdough bread every morning"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(API root, model id, log) of `transformers serve` on the base."""
    root = tmp_path_factory.mktemp("engine")
    folder, log = sampling_folder(root), root / "engine.log"
    proc, url = start_engine(folder, log)
    try:
        yield url, folder.name, log
    finally:
        stop_engine(proc)


@pytest.fixture
def use(served, monkeypatch: pytest.MonkeyPatch) -> str:
    """The served engine set for this test; returns its model's copy name."""
    url, model_id, _ = served
    monkeypatch.setenv(engine.URL_ENV, url)
    engine._listing.clear()
    return engine.PREFIX + model_id


def _requests_logged(log: Path) -> int:
    return log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')


def test_deliberate_mode_drafts_on_the_engine_and_checks_here(use: str, served,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # One request at a time: transformers serve seeds torch's global generator per request, so only
    # requests that do not overlap are repeatable there (llama.cpp and vLLM seed each request apart).
    monkeypatch.setenv(engine.CONCURRENCY_ENV, "1")
    assert use in copy_models()   # the engine's models are listed with ours
    before = _requests_logged(served[2])
    req = CopyRequest(BRIEF, kind="tagline", model=use, n=2, draft=3, seed=7)
    result = generate_copy(req)
    assert _requests_logged(served[2]) - before == 6   # n × draft drafts, each its own request
    assert result.settings["model"] == use and result.settings["deliberate"]
    assert 1 <= len(result.variants) + len(result.rejected) and len(result.variants) <= 2
    for v in result.variants:   # each pick passed every hard check, here
        assert v.checks and all(c["passed"] for c in v.checks if c["hard"]) and 7 <= v.seed < 13
    if len(result.variants) < 2:
        assert "passed the checks" in result.notes[0]
    # The engine honours seeds: the same request gives the same picks.
    again = generate_copy(CopyRequest(BRIEF, kind="tagline", model=use, n=2, draft=3, seed=7))
    assert again.texts == result.texts


def test_plain_streaming_through_the_engine_adds_up_to_the_result(use: str) -> None:
    req = CopyRequest(BRIEF, kind="description", model=use, n=2, seed=3, deliberate=False, max_new_tokens=40)
    texts, deltas, result = apply_copy_events(stream_copy(req))
    assert result is not None and result.variants
    assert deltas > len(result.variants)   # text arrived in pieces, not only at the end
    assert texts == result.texts


def test_the_engine_path_refuses_clearly(use: str, served, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadParameter, match="LoRA adapters run here"):
        generate_copy(CopyRequest(BRIEF, model=use, adapter="copy"))
    with pytest.raises(BadParameter, match="refused the request"):   # this engine serves one model
        generate_copy(CopyRequest(BRIEF, model="engine/nosuch-model", n=1, draft=1))
    monkeypatch.setenv(engine.URL_ENV, f"http://127.0.0.1:{free_port()}/v1")   # nothing listens there
    engine._listing.clear()
    assert not [m for m in copy_models() if engine.is_engine_ref(m)]   # a listing without it, no crash
    with pytest.raises(EngineUnavailable, match="cannot be reached"):
        generate_copy(CopyRequest(BRIEF, model=use, n=1, draft=1))
    with pytest.raises(EngineUnavailable, match="cannot be reached"):   # streaming, too
        list(stream_copy(CopyRequest(BRIEF, model=use, n=2, deliberate=False)))
    monkeypatch.delenv(engine.URL_ENV)
    with pytest.raises(BadParameter, match="no engine is set"):
        generate_copy(CopyRequest(BRIEF, model=use, n=1, draft=1))
    monkeypatch.setenv(engine.URL_ENV, "ftp://example.org")
    with pytest.raises(BadParameter, match="http"):
        generate_copy(CopyRequest(BRIEF, model=use, n=1, draft=1))


def test_the_cli_and_the_api_take_engine_models(served, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, model_id, _ = served
    name = engine.PREFIX + model_id
    monkeypatch.delenv(engine.URL_ENV, raising=False)
    assert main(["copy", BRIEF, "--engine", url, "--model", name, "--kind", "headline", "--n", "1",
                 "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["model"] == name and len(out["variants"]) + len(out["rejected"]) >= 1
    assert main(["copy", BRIEF, "--engine", "not a url", "--model", name]) == 2

    server = Server(make_home(tmp_path), make_store(tmp_path), args=("--engine", url))
    server.start()
    try:
        listed = [m["id"] for m in httpx.get(server.url + "/v1/models", timeout=30).json()["data"]]
        assert name in listed
        answer = server.client().chat.completions.create(
            model=name, messages=[{"role": "user", "content": BRIEF}], n=2, seed=4,
            extra_body={"kind": "tagline"})
        assert answer.model == name and 1 <= len(answer.choices) <= 2
        assert all(c.message.content and c.model_extra["checks"] for c in answer.choices)
        assert answer.usage.prompt_tokens > 0
        # An integrator's batch runs on the engine too (the studio's own worker takes the lines).
        client = server.client()
        lines = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": name, "messages": [{"role": "user", "content": brief}], "n": 1, "draft": 2,
                           "kind": "headline"}}
                 for i, brief in enumerate([BRIEF, "Waterproof hiking boots, 40% off this weekend only"])]
        up = client.files.create(file=("engine.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()),
                                 purpose="batch")
        batch = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 240
        while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired"):
            assert time.monotonic() < deadline, batch
            time.sleep(0.5)
        assert batch.status == "completed" and batch.request_counts.completed == 2, batch
        out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        assert sorted(o["custom_id"] for o in out) == ["b0", "b1"]
        assert all(o["response"]["body"]["model"] == name for o in out)
    finally:
        server.stop()
    # The engine stopped: the API says so with a 502 and the engine's address, and goes on serving.
    down = Server(make_home(tmp_path / "b"), make_store(tmp_path / "b"),
                  args=("--engine", f"http://127.0.0.1:{free_port()}/v1"))
    down.start()
    try:
        r = httpx.post(down.url + "/v1/chat/completions", timeout=60,
                       json={"model": name, "messages": [{"role": "user", "content": BRIEF}]})
        assert r.status_code == 502, r.text
        assert "cannot be reached" in r.json()["error"]["message"]
        assert httpx.get(down.url + "/health", timeout=10).status_code == 200
    finally:
        down.stop()


@pytest.mark.slow   # about a minute: the studio and Chromium; the Copy tab's picker shares copy_models() above
def test_the_studio_writes_copy_on_the_engine_in_chromium(served, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from test_browser import ARGS, CHROMIUM, set_number

    url, model_id, log = served
    name = engine.PREFIX + model_id
    server = Server(make_home(tmp_path), make_store(tmp_path), ui=True, args=("--engine", url))
    server.start(120)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            page.goto(server.url + "/")
            page.get_by_role("tab", name="Copy").click()
            page.locator("#copy-model input").click()
            page.get_by_role("option", name=name, exact=True).click()   # the engine's model, in our picker
            page.locator("#copy-brief textarea").fill(BRIEF)
            set_number(page, "copy-seed", 5)
            before = _requests_logged(log)
            page.locator("#copy-write").click()
            expect(page.locator("#copy-status")).to_contain_text("variant(s), seed 5", timeout=180_000)
            page.screenshot(path=str(tmp_path / "engine-copy.png"), full_page=True)
            browser.close()
        assert _requests_logged(log) - before == 12   # 3 variants × 4 drafts, written by the engine
        index = (server.home / "history" / "index.jsonl").read_text().splitlines()
        assert json.loads(index[-1])["settings"]["model"] == name   # the history says which model wrote it
    finally:
        server.stop()


def _chat_batch(client, name: str, n_lines: int):
    lines = [{"custom_id": f"w{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": name, "messages": [{"role": "user", "content": BRIEF}], "n": 1, "draft": 1,
                       "kind": "headline", "seed": i}} for i in range(n_lines)]
    up = client.files.create(file=("w.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch")
    return client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")


def test_a_batch_waits_out_an_engine_that_is_down(tmp_path: Path) -> None:
    # The engine is not up yet when the lines are claimed: they wait for it and then run, none failed.
    port = free_port()
    server = Server(make_home(tmp_path), make_store(tmp_path), args=("--engine", f"http://127.0.0.1:{port}/v1"))
    server.start()
    proc = None
    try:
        client = server.client()
        batch = _chat_batch(client, "engine/smollm2", 2)
        deadline = time.monotonic() + 60
        while "runs again in" not in server.server_log():
            assert time.monotonic() < deadline, server.server_log()[-2000:]
            time.sleep(0.2)
        proc, _ = start_engine(sampling_folder(tmp_path / "late"), tmp_path / "late-engine.log", port=port)
        deadline = time.monotonic() + 240
        while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired"):
            assert time.monotonic() < deadline, batch
            time.sleep(0.5)
        assert batch.request_counts.completed == 2 and batch.request_counts.failed == 0, batch
    finally:
        server.stop()
        if proc is not None:
            stop_engine(proc)


def test_a_line_whose_engine_never_comes_fails_with_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from brushpen.api import handlers, service
    from brushpen.generators import worker
    from brushpen.generators.jobs import JobStore

    monkeypatch.setenv(engine.URL_ENV, f"http://127.0.0.1:{free_port()}/v1")   # nothing listens there
    monkeypatch.setattr(worker, "ENGINE_WAIT_S", 1.0)
    engine._listing.clear()
    store = JobStore(tmp_path / "jobs.db")
    body = {"model": "engine/smollm2", "messages": [{"role": "user", "content": BRIEF}], "n": 1, "draft": 1}
    line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": body}
    f = store.add_file("in.jsonl", "batch", (json.dumps(line) + "\n").encode())
    batch = store.create_batch(f.id, "/v1/chat/completions")
    w = worker.Worker(store, functools.partial(service.run_line, jobs=store), handlers.status_error_body, poll_s=0.2)
    start = time.monotonic()
    w.run_until_idle()
    done = store.get_batch(batch.id)
    assert done.status == "completed" and done.failed == 1 and 0.2 < time.monotonic() - start < 30
    error = json.loads(store.file_content(done.error_file_id).decode())
    assert error["response"]["status_code"] == 502
    assert "cannot be reached" in error["response"]["body"]["error"]["message"]
