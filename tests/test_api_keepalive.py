"""An unexpected error answers a 500 and leaves the keep-alive connection usable.

The app is the real `create_app()` served by uvicorn in this process, with one route added that
fails the way an unforeseen bug would. Before `handlers.CatchAll`, uvicorn dropped the connection
after Starlette's 500 (no `Connection: close`), and the client's next request on it got ECONNRESET.
"""

from __future__ import annotations

import http.client
import json

import pytest
from fastapi.responses import StreamingResponse

from api_server import serve_in_thread

from brushpen.api.app import ApiSettings, create_app


@pytest.fixture
def served(brushpen_home):
    app = create_app(ApiSettings(batch_worker=False))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("an unforeseen bug")

    @app.get("/boom-midway")
    async def boom_midway() -> StreamingResponse:
        async def body():
            yield b"data: one\n\n"
            raise RuntimeError("a bug halfway through a stream")
        return StreamingResponse(body(), media_type="text/event-stream")

    with serve_in_thread(app) as url:
        yield int(url.rsplit(":", 1)[1])


def test_a_500_keeps_the_connection_alive(served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    for _ in range(3):
        conn.request("GET", "/boom")
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 500
        assert body["error"]["code"] == "internal_error"
        assert "RuntimeError" in body["error"]["message"] and "unforeseen" not in body["error"]["message"]
        assert "Traceback" not in json.dumps(body)
    conn.request("GET", "/health")          # the same socket, after three 500s
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    conn.close()


def test_an_error_midway_through_a_stream_ends_that_connection(served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    conn.request("GET", "/boom-midway")
    r = conn.getresponse()
    assert r.status == 200               # already sent when the error came
    with pytest.raises(http.client.IncompleteRead):
        r.read()                         # the chunked body has no terminator: the client can tell
    conn.close()
    fresh = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    fresh.request("GET", "/health")      # the server itself is fine
    assert fresh.getresponse().status == 200
    fresh.close()
