"""Bad input against the real server: every refusal is a 4xx with OpenAI's JSON error body and a clear
message, never a traceback, and the server keeps serving afterwards. Also the bounded queue (429).

The server here runs with small limits (64 KiB uploads, one generation at a time plus one waiting)
so the limits are cheap to hit.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import zipfile

import httpx
import openai
import pytest

from api_server import BRIEF, Server, make_home, make_store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api-errors")
    srv = Server(make_home(root), make_store(root), BRUSHPEN_API_MAX_UPLOAD=str(64 << 10),
                 BRUSHPEN_API_CONCURRENCY="1", BRUSHPEN_API_QUEUE="1")
    srv.start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.server_log()   # every refusal was handled, none crashed a handler


def post(server: Server, path: str, content: bytes | str, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(server.url + path, content=content, headers={"content-type": content_type}, timeout=60)


def refused(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text and err["message"]
    for w in words:
        assert w in err["message"], err["message"]
    return err


def still_serves(server: Server) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.post(server.url + "/v1/images/generations", json={"model": "shapes", "seed": 1}, timeout=60)
    assert r.status_code == 200 and r.json()["data"][0]["b64_json"]


def test_malformed_json(server: Server) -> None:
    err = refused(post(server, "/v1/completions", '{"prompt": "x", '), 400, "not valid JSON")
    assert err["code"] == "invalid_json"
    refused(post(server, "/v1/chat/completions", "[1, 2]"), 400, "JSON object")
    refused(post(server, "/v1/completions", "plain words", "text/plain"), 400)
    still_serves(server)


def test_unknown_fields_are_named(server: Server) -> None:
    err = refused(post(server, "/v1/completions", json.dumps({"prompt": BRIEF, "temprature": 0.5})), 400,
                  "unknown parameter 'temprature'")
    assert err["code"] == "unknown_parameter" and err["param"] == "temprature"
    refused(post(server, "/v1/images/generations", json.dumps({"model": "shapes", "colour": "red"})), 400, "colour")
    # An OpenAI field we cannot honour is refused with its name, not silently ignored.
    refused(post(server, "/v1/completions", json.dumps({"prompt": BRIEF, "echo": True})), 400, "echo")
    refused(post(server, "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}],
                                                             "tools": [{"type": "function"}]})), 400, "tools")
    still_serves(server)


def test_unknown_models_list_the_real_ones(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="shapes"):
        client.images.generate(model="dall-e-3", prompt="a flag")
    with pytest.raises(openai.NotFoundError, match="smollm2-135m"):
        client.completions.create(model="gpt-4", prompt=BRIEF, max_tokens=4)
    # A path is never a model name over the API: the services accept folders, the API must not,
    # and it says so with a 400 before anything is loaded.
    refused(post(server, "/v1/images/generations", json.dumps({"model": str(server.store / "gan" / "shapes")})),
            400, "store name")
    refused(post(server, "/v1/completions", json.dumps({"model": "/", "prompt": BRIEF})), 400, "store name")
    still_serves(server)


@pytest.mark.parametrize("model", ["/tmp", "/etc", "../weights/gan/shapes", "gan/../../etc", "a/b/c", "~root",
                                   "./shapes", "shapes:../../x", "C:\\Windows", ".hidden"])
def test_paths_as_model_names_are_refused_everywhere(server: Server, model: str) -> None:
    """Over HTTP a model is `name`, `family/name` or `base:adapter`; a caller cannot probe or write
    the server's file system through it (hardening, items 2 and 3)."""
    store = str(server.store)
    for path, body in (("/v1/fine_tuning/jobs", {"model": model, "training_file": "file-x", "suffix": "s"}),
                       ("/v1/detections", {"model": model, "images": [{"b64_json": "AA=="}]}),
                       ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": BRIEF}]}),
                       ("/v1/images/generations", {"model": model, "seed": 1})):
        err = refused(post(server, path, json.dumps(body)), 400, "store name")
        assert store not in err["message"]
    r = httpx.post(server.url + "/v1/detections", files=[("file", ("a.png", b"x", "image/png"))],
                   data={"model": model}, timeout=60)
    assert r.status_code == 400 and "store name" in r.text and store not in r.text
    assert httpx.get(server.url + "/v1/fine_tuning/jobs", timeout=30).json()["data"] == []   # no job was made


def test_unknown_store_names_do_not_show_server_paths(server: Server) -> None:
    for path, body in (("/v1/detections", {"model": "nope", "images": [{"b64_json": "AA=="}]}),
                       ("/v1/images/generations", {"model": "gan/nope", "seed": 1})):
        r = post(server, path, json.dumps(body))
        assert r.status_code == 404 and str(server.store) not in r.text and str(server.home) not in r.text


def test_caps_on_n_and_max_tokens(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="n: Input should be less than or equal to 16"):
        client.images.generate(model="shapes", prompt="a flag", n=10000)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="smollm2-135m", prompt=BRIEF, max_tokens=100_000)
    refused(post(server, "/v1/completions", json.dumps({"prompt": BRIEF, "n": 10000})), 400, "n")
    refused(post(server, "/v1/images/generations", json.dumps({"model": "shapes", "size": "99999x2"})), 400, "size")
    refused(post(server, "/v1/images/generations", json.dumps({"model": "shapes", "prompt": "spaceship"})), 400,
            "Circles, Squares, Flags")
    still_serves(server)


def test_huge_and_non_utf8_bodies(server: Server) -> None:
    huge = json.dumps({"prompt": "a" * (3 << 20)})
    err = refused(post(server, "/v1/completions", huge), 413, "larger than the limit")
    assert err["code"] == "request_too_large"
    files = {"file": ("big.jsonl", b'{"x": 1}\n' * 20_000, "application/jsonl")}
    refused(httpx.post(server.url + "/v1/files", data={"purpose": "batch"}, files=files), 413)
    err = refused(post(server, "/v1/completions", b'{"prompt": "\xff\xfe bad bytes"}'), 400, "UTF-8")
    # UTF-16 (with its byte-order mark) is JSON a lenient parser would guess at: refused (hardening, item 8).
    utf16 = json.dumps({"prompt": BRIEF, "max_tokens": 4}).encode("utf-16")
    assert refused(post(server, "/v1/completions", utf16), 400, "not UTF-8")["code"] == "invalid_body"
    still_serves(server)


def test_image_fields_beyond_neutral_are_refused(server: Server) -> None:
    for field, value in (("quality", "hd"), ("style", "vivid"), ("output_compression", 50)):
        refused(post(server, "/v1/images/generations", json.dumps({"model": "shapes", field: value})), 400, field)
    ok = post(server, "/v1/images/generations", json.dumps({"model": "shapes", "quality": "standard", "seed": 1}))
    assert ok.status_code == 200, ok.text


def test_blocked_or_empty_briefs(server: Server) -> None:
    refused(post(server, "/v1/completions", json.dumps({"prompt": "   ", "max_tokens": 4})), 400, "brief is empty")
    invisible = "\u200b\u200c\u200d\u2060\ufeff \u200b"   # zero-width characters only
    refused(post(server, "/v1/completions", json.dumps({"prompt": invisible, "max_tokens": 4})), 400, "brief is empty")
    refused(post(server, "/v1/chat/completions", json.dumps({"messages": [{"role": "system", "content": "x"}]})),
            400, "no user message")
    with pytest.raises(openai.BadRequestError, match="temperature 0"):
        server.client().completions.create(model="smollm2-135m", prompt=BRIEF, n=2, temperature=0, max_tokens=4,
                                           stream=True)
    still_serves(server)


def test_found_by_the_bad_input_bench(server: Server) -> None:
    """The cases `benchmarks/bad_input.py` found answered wrongly, each with its fix."""
    # A boolean must be a JSON boolean: pydantic's lax mode took "yes" for true and streamed.
    chat = {"messages": [{"role": "user", "content": BRIEF}], "max_tokens": 4, "stream": "yes"}
    refused(post(server, "/v1/chat/completions", json.dumps(chat)), 400, "stream")
    # A known path with another method: 405 with Allow, not the /v1 fallback's 404.
    r = httpx.delete(server.url + "/v1/models", timeout=30)
    refused(r, 405, "DELETE")
    assert r.headers["allow"] == "GET"
    # A zip bomb is refused at upload by its declared sizes (and again while read, as before).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("real/a.png", "w") as member:
        for _ in range(50):
            member.write(bytes(1 << 20))
    assert len(buf.getvalue()) < 64 << 10
    files = {"file": ("bomb.zip", buf.getvalue(), "application/zip")}
    refused(httpx.post(server.url + "/v1/files", data={"purpose": "fine-tune"}, files=files, timeout=30),
            400, "zip bomb")
    still_serves(server)


def test_a_full_queue_answers_429_and_recovers(server: Server) -> None:
    body = {"model": "smollm2-135m", "prompt": BRIEF, "max_tokens": 12, "n": 2, "seed": 5,
            "deliberate": False}   # plain: two variants every time, so each 200 has a text

    def call(_: int) -> httpx.Response:
        return httpx.post(server.url + "/v1/completions", json=body, timeout=120)

    with cf.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    refused(busy, 429, "busy")
    assert len({r.json()["choices"][0]["text"] for r in responses if r.status_code == 200}) == 1
    still_serves(server)
