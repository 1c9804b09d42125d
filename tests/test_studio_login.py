"""The studio's surface before login, with a key set: what is public, failed-login limits, uploads.

The app is `brushpen studio`'s own (`build_server_app`: the API with the Gradio studio mounted),
served by uvicorn in this process with a small failure limit (3 in 3 s) so the limit is cheap to hit.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from api_server import make_store, serve_in_thread

KEY = "login-test-key-0123"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("login")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRUSHPEN_HOME", str(home))
        mp.setenv("BRUSHPEN_WEIGHTS", str(make_store(root)))
        mp.setenv("BRUSHPEN_AUTH_FAILURES", "3")
        mp.setenv("BRUSHPEN_AUTH_WINDOW", "3")
        mp.setenv("BRUSHPEN_API_MAX_UPLOAD", str(1 << 20))
        mp.delenv("GRADIO_TEMP_DIR", raising=False)
        mp.delenv("BRUSHPEN_PUBLIC_DOCS", raising=False)
        from brushpen.cli.studio_cmd import build_server_app

        with serve_in_thread(build_server_app(KEY)) as url:
            yield url, home


def wait_out(r: httpx.Response) -> None:
    """Sleep through a 429's Retry-After."""
    time.sleep(int(r.headers["retry-after"]) + 0.2)


@pytest.fixture(autouse=True)
def clean_slate() -> None:
    time.sleep(3.1)   # earlier tests' failures (an /openapi.json without the key counts) age out


def test_only_the_login_page_and_health_are_public(studio) -> None:
    url, _ = studio
    assert httpx.get(url + "/health").status_code == 200
    for path in ("/docs", "/redoc"):
        assert httpx.get(url + path).status_code == 404, path
    assert httpx.get(url + "/openapi.json").status_code == 401
    spec = httpx.get(url + "/openapi.json", headers={"authorization": f"Bearer {KEY}"}).json()
    assert "/v1/images/generations" in spec["paths"]
    # The login page (and its all_endpoints variant) names no studio endpoint, model or class.
    for query in ("", "?all_endpoints=true"):
        page = httpx.get(url + "/" + query)
        assert page.status_code == 200 and "auth_required" in page.text
        for word in ("shapes", "Circles", "smollm2", "generate", "detector"):
            assert word not in page.text, (query, word)


def test_wrong_keys_are_limited_with_retry_after(studio) -> None:
    url, _ = studio
    wrong = {"authorization": "Bearer nope"}
    assert [httpx.get(url + "/v1/models", headers=wrong).status_code for _ in range(3)] == [401] * 3
    limited = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {KEY}"})
    assert limited.status_code == 429            # the right key waits too: no oracle for a guess
    assert 1 <= int(limited.headers["retry-after"]) <= 3
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    wait_out(limited)
    assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_wrong_logins_are_limited_and_count_with_keys(studio) -> None:
    url, _ = studio
    form = {"username": "anyone", "password": "nope"}
    assert [httpx.post(url + "/login", data=form).status_code for _ in range(3)] == [400] * 3
    limited = httpx.post(url + "/login", data={"username": "anyone", "password": KEY})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Logins and keys share the count: the API is limited for this address too.
    assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 429
    wait_out(limited)
    ok = httpx.post(url + "/login", data={"username": "anyone", "password": KEY})
    assert ok.status_code == 200 and ok.json() == {"success": True}


def test_uploads_obey_the_api_cap_and_land_under_brushpen_home(studio) -> None:
    url, home = studio
    with httpx.Client(base_url=url) as client:
        assert client.post("/login", data={"username": "u", "password": KEY}).status_code == 200
        small = client.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")})
        assert small.status_code == 200, small.text
        (stored,) = small.json()
        assert Path(stored).resolve().is_relative_to((home / "gradio-tmp").resolve())
        big = client.post("/gradio_api/upload", files={"files": ("b.bin", b"0" * ((1 << 20) + 1))})
        assert big.status_code == 413
