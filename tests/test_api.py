"""The REST API against the real server: models, images (b64 and url, with PNG metadata), completions
and chat (streamed and not), and auth, called with the `openai` SDK and with plain httpx.

One server for the module, with an API key, a tiny GAN store and the SmolLM2 base; generations stay
at a dozen tokens.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from api_server import BRIEF, Server, make_home, make_store
from brushpen.safety import credentials

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api")
    srv = Server(make_home(root), make_store(root), api_key=KEY)
    srv.start()
    yield srv
    srv.stop()


def png_info(data: bytes) -> tuple[dict, np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        return dict(im.info), np.asarray(im.convert("RGB"))


def apply_stream(chunks, chat: bool) -> dict[int, str]:
    """The variants a stream spells out: append deltas, swap on our `replace`, drop on `dropped`."""
    texts: dict[int, str] = {}
    for chunk in chunks:
        for c in chunk.choices:
            extra = c.model_extra or {}
            if extra.get("dropped"):
                texts.pop(c.index, None)
            elif "replace" in extra:
                texts[c.index] = extra["replace"]
            else:
                piece = (c.delta.content if chat else c.text) or ""
                texts[c.index] = texts.get(c.index, "") + piece
    return texts


def test_health_is_open_and_v1_needs_the_key(server: Server) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}):
        r = httpx.get(server.url + "/v1/models", headers=headers)
        assert r.status_code == 401
        assert "API key" in r.json()["error"]["message"] and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models", headers=server.headers()).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    # An unknown /v1 path is the API's too: the key first, then OpenAI's 404 shape (hardening, item 8).
    for method in ("GET", "POST", "DELETE"):
        assert httpx.request(method, server.url + "/v1/no/such/thing").status_code == 401
        r = httpx.request(method, server.url + "/v1/no/such/thing", headers=server.headers())
        assert r.status_code == 404 and r.json()["error"]["message"] == "no such endpoint: /v1/no/such/thing"
    # With a key, the schema is behind it and the docs pages are off (BRUSHPEN_PUBLIC_DOCS=1 opens them).
    assert httpx.get(server.url + "/docs").status_code == 404
    assert httpx.get(server.url + "/openapi.json").status_code == 401
    spec = httpx.get(server.url + "/openapi.json", headers=server.headers()).json()
    assert {"/v1/images/generations", "/v1/completions", "/v1/chat/completions", "/v1/batches"} <= set(spec["paths"])


def test_models_lists_image_and_copy_models(server: Server) -> None:
    models = {m.id: m for m in server.client().models.list()}
    assert set(models) == {"shapes", "smollm2-135m"}
    shapes = models["shapes"].model_extra
    assert shapes["task"] == "images" and shapes["kind"] == "gan"
    assert shapes["class_names"] == ["Circles", "Squares", "Flags"] and shapes["resolution"] == 16
    assert models["smollm2-135m"].model_extra["task"] == "copy"
    assert server.client().models.retrieve("gan/shapes").id == "shapes"


def test_images_carry_their_settings_and_match_the_service(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = server.client()
    res = client.images.generate(model="shapes", prompt="a flag", n=3, size="16x16",
                                 extra_body={"seed": 40, "truncation_psi": 0.7})
    assert res.created > 0 and len(res.data) == 3 and res.size == "16x16"
    pngs = [base64.b64decode(d.b64_json) for d in res.data]
    infos = [png_info(p) for p in pngs]
    for i, (info, pixels) in enumerate(infos):
        assert pixels.shape == (16, 16, 3)
        assert f"Seed: {40 + i}" in info["parameters"] and "Class: Flags" in info["parameters"]
        assert "Truncation psi: 0.7" in info["parameters"] and "Model: shapes" in info["parameters"]
        assert json.loads(info["brushpen"])["seed"] == 40 + i
    # The same request gives the same pixels, and the API gives exactly what the service gives.
    again = client.images.generate(model="shapes", prompt="a flag", n=1, extra_body={"seed": 41, "truncation_psi": 0.7})
    assert np.array_equal(png_info(base64.b64decode(again.data[0].b64_json))[1], infos[1][1])
    from brushpen.generators.images import ImageRequest, generate_images

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(server.store))
    direct = generate_images(ImageRequest(model="shapes", n=3, seed=40, truncation_psi=0.7, prompt="a flag"))
    assert all(np.array_equal(np.asarray(d.image.convert("RGB")), px) for d, (_, px) in zip(direct, infos))


def test_image_urls_serve_the_png_without_the_key(server: Server) -> None:
    res = server.client().images.generate(model="shapes", prompt="squares", response_format="url",
                                          extra_body={"seed": 3})
    url = res.data[0].url
    assert url.startswith(server.url + "/images/") and url.endswith(".png")
    r = httpx.get(url)   # like a signed URL: no Authorization header
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    info, _ = png_info(r.content)
    assert "Seed: 3" in info["parameters"] and "Class: Squares" in info["parameters"]
    b64 = server.client().images.generate(model="shapes", prompt="squares", extra_body={"seed": 3})
    # the same pixels and settings; each copy carries its own signed manifest (a fresh signature)
    data = base64.b64decode(b64.data[0].b64_json)
    assert np.array_equal(png_info(data)[1], png_info(r.content)[1]) and png_info(data)[0] == info
    assert credentials.read(data)["state"] == credentials.read(r.content)["state"] == "valid-untrusted"   # the
    # server's own CA signed them; this process trusts only its own home's
    assert httpx.get(server.url + "/images/notatoken0000000000000000.png").status_code == 404


def test_credentials_route_reads_the_servers_own_manifest(server: Server) -> None:
    png = base64.b64decode(server.client().images.generate(model="shapes", prompt="flag",
                                                           extra_body={"seed": 5}).data[0].b64_json)
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(jpeg, format="JPEG")
    body = {"images": [{"name": "a.png", "b64_json": base64.b64encode(png).decode()},
                       {"name": "a.jpg", "b64_json": base64.b64encode(jpeg.getvalue()).decode()},
                       {"name": "junk.png", "b64_json": base64.b64encode(b"not an image").decode()}]}
    r = httpx.post(server.url + "/v1/credentials", json=body, headers=server.headers(), timeout=60)
    assert r.status_code == 200, r.text
    signed, reencoded, junk = r.json()["data"]
    # the server trusts its own CA; the manifest declares AI generation, so it is evidence
    assert signed["credentials"]["state"] == "valid" and signed["credentials"]["ai_generated"]
    assert signed["credentials"]["model"]["name"] == "shapes" and "C2PA manifest" in signed["evidence"][0]
    # a 16-px image holds no watermark: once re-encoded, nothing leads back to its manifest
    assert reencoded["credentials"]["state"] == "none" and reencoded["evidence"] == []
    assert junk["error"] and junk["credentials"] is None


def test_completions_same_seed_same_text_and_stream_spells_the_same(server: Server) -> None:
    client = server.client()
    kw = dict(model="smollm2-135m", prompt=BRIEF, max_tokens=10, n=2, seed=7,
              extra_body={"kind": "headline", "deliberate": False})   # 10 tokens: plain, every variant kept
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert a.object == "text_completion" and a.id.startswith("cmpl-") and a.model == "smollm2-135m"
    assert [c.index for c in a.choices] == [0, 1]
    texts = [c.text for c in a.choices]
    assert all(texts) and texts[0] != texts[1] and texts == [c.text for c in b.choices]
    assert a.usage.prompt_tokens > 20 and 0 < a.usage.completion_tokens <= 2 * 10
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    assert all(c.finish_reason in ("stop", "length") for c in a.choices)
    chunks = list(client.completions.create(**kw, stream=True))
    assert all(ch.object == "text_completion" for ch in chunks)
    assert apply_stream(chunks, chat=False) == {0: texts[0], 1: texts[1]}
    finals = [c for ch in chunks for c in ch.choices if c.finish_reason]
    assert sorted(c.index for c in finals) == [0, 1]


def test_stream_is_openai_sse_on_the_wire(server: Server) -> None:
    body = {"model": "smollm2-135m", "prompt": BRIEF, "max_tokens": 8, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}, "deliberate": False}   # token by token
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=server.headers(), timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert len(payloads) >= 3 and len({p["id"] for p in payloads}) == 1
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] > 0


def test_chat_completions_stream_and_not(server: Server) -> None:
    client = server.client()
    messages = [{"role": "system", "content": "You write copy."}, {"role": "user", "content": BRIEF}]
    kw = dict(model="smollm2-135m", messages=messages, max_tokens=12, n=2, seed=21, temperature=0.7,
              top_p=0.9, stop=["!"], extra_body={"kind": "tagline", "tone": "playful", "audience": "hikers"})
    full = client.chat.completions.create(**kw)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    texts = {c.index: c.message.content for c in full.choices}
    assert all(c.message.role == "assistant" for c in full.choices) and all(texts.values())
    assert not any("!" in t for t in texts.values())
    assert full.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert apply_stream(chunks, chat=True) == texts
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_greedy_chat_with_list_content(server: Server) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": BRIEF}]}]
    plain = {"deliberate": False}   # 8 greedy tokens: the one answer, whatever the checks say
    a = server.client().chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=8, temperature=0,
                                                extra_body=plain)
    b = server.client().chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=8, temperature=0,
                                                seed=99, extra_body=plain)
    assert a.choices[0].message.content and a.choices[0].message.content == b.choices[0].message.content


def test_deliberate_completions_carry_their_checks_and_best_of_drafts(server: Server) -> None:
    """Deliberate mode is the default; OpenAI's best_of sets its drafts. Each choice carries the
    checks it passed, and a run that comes up short says so in `notes` instead of padding."""
    client = server.client()
    kw = dict(model="smollm2-135m", prompt=BRIEF, max_tokens=24, n=2, seed=3, extra_body={"kind": "tagline"})
    a = client.completions.create(**kw, best_of=6).model_dump()
    assert a == {**client.completions.create(**kw, best_of=6).model_dump(), "id": a["id"], "created": a["created"]}
    assert [c["index"] for c in a["choices"]] == list(range(len(a["choices"])))
    for c in a["choices"]:
        assert c["text"] and [k["name"] for k in c["checks"]][:2] == ["on_brief", "length"]
        assert all(k["passed"] for k in c["checks"] if k["hard"])
    if len(a["choices"]) < 2:
        assert "passed the checks among 6 drafts" in a["notes"][0]
    plain = client.completions.create(**{**kw, "extra_body": {"kind": "tagline", "deliberate": False}}).model_dump()
    assert all("checks" not in c or c["checks"] is None for c in plain["choices"])
    r = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=30,
                   json={"model": "smollm2-135m", "prompt": BRIEF, "n": 3, "best_of": 2})
    assert r.status_code == 400 and "best_of (2) must be at least n (3)" in r.text
    # Korean: `language` picks the Korean prompt and checks (length in characters).
    ko = {"model": "smollm2-135m", "prompt": "48시간 안에 진료비를 지급하는 반려동물 보험", "kind": "tagline",
          "language": "ko", "max_tokens": 24, "seed": 1, "draft": 3}
    r = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=60, json=ko)
    assert r.status_code == 200, r.text
    for c in r.json()["choices"]:
        assert "characters" in next(k["detail"] for k in c["checks"] if k["name"] == "length")
    assert r.json()["choices"] or "passed the checks among 3 drafts" in r.json()["notes"][0]
    r = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=30, json={**ko, "language": "fr"})
    assert r.status_code == 400 and "language" in r.text


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def _inflight(server: Server) -> int:
    return httpx.get(server.url + "/health", timeout=10).json()["queue"]["inflight"]


def test_a_closed_stream_stops_generating_and_holds_its_slot_until_it_has(server: Server) -> None:
    """Closing a stream's socket stops its generation at the next decode step; its slot counts
    until then, so abandoned streams cannot pile work past the limit (issue: hardening, item 1)."""
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": BRIEF}], "max_tokens": 128, "n": 4,
            "seed": 5, "stream": True}
    url = server.url + "/v1/chat/completions"
    for _ in range(3):
        with httpx.Client(timeout=120) as client:
            with client.stream("POST", url, json=body, headers=server.headers()) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                deltas = 0
                while deltas < 1:   # past the 4 role chunks: generation is under way
                    line = next(lines)
                    if line.startswith("data: {") and '"content": ""' not in line and '"content"' in line:
                        deltas += 1
        # the socket is closed here, 1 of 4 x 128 tokens in
    deadline = time.monotonic() + 30
    while _inflight(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _inflight(server) == 0
    # Once the slots are free the work is over: the server sits idle.
    before = _cpu_seconds(server.proc.pid)
    time.sleep(1.5)
    assert _cpu_seconds(server.proc.pid) - before < 0.5
    # And a short request is answered at once, not after the abandoned work.
    t0 = time.monotonic()
    done = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=120,
                      json={"model": "smollm2-135m", "prompt": BRIEF, "max_tokens": 8, "seed": 1})
    assert done.status_code == 200 and time.monotonic() - t0 < 20
