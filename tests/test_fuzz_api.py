"""A standing fuzz of the real server from its own OpenAPI schema (Schemathesis on Hypothesis).

Every operation gets schema-breaking requests (negative mode); the cheap ones (reads, the tiny
GAN, the checker) get schema-valid ones too. Generation of copy is left to negative mode: a valid
request there runs the real SmolLM2 for up to 512 tokens. A failure is any 5xx, a body that is
not JSON with OpenAI's `error` shape on a 4xx, or a traceback in any body. Bounded and seeded
(`derandomize`) so the default suite stays fast; `-m slow` runs ten times the examples.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api_server import Server, make_home, make_store

KEY = "fuzz-key-0123456789"
EXPENSIVE = ("/v1/completions", "/v1/chat/completions", "/v1/fine_tuning/jobs", "/v1/batches")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    srv = Server(make_home(root), make_store(root), api_key=KEY, BRUSHPEN_API_CONCURRENCY="1",
                 BRUSHPEN_API_QUEUE="2")
    srv.start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.server_log()


def operations(server: Server) -> list:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    return [result.ok() for result in schema.get_all_operations()]


def check(response, label: str) -> None:
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    assert "Traceback" not in response.text, label
    content_type = (response.headers.get("content-type") or [""])[0]   # schemathesis: lists of values
    if response.status_code >= 400 and content_type.startswith("application/json"):
        err = json.loads(response.text).get("error")
        assert isinstance(err, dict) and err.get("message"), f"{label}: {response.text[:300]}"


def fuzz(server: Server, examples: int) -> dict[str, int]:
    """Run every operation; returns how many requests each got."""
    counts: dict[str, int] = {}
    for op in operations(server):
        label = f"{op.method.upper()} {op.path}"
        modes = [GenerationMode.NEGATIVE]
        if not op.path.startswith(EXPENSIVE) or op.method.upper() == "GET":
            modes.append(GenerationMode.POSITIVE)
        for mode in modes:
            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
                counts[label] = counts.get(label, 0) + 1
                check(response, f"{label} ({mode.value}): {case.body!r:.300}")

            try:
                run()
            except Unsatisfiable:   # nothing in this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, label
    return counts


def test_the_api_answers_generated_requests_with_clean_4xx_or_success(server: Server) -> None:
    counts = fuzz(server, examples=6)
    print(f"{len(counts)} operations, {sum(counts.values())} requests: {counts}")
    assert len(counts) >= 15 and sum(counts.values()) >= 100, counts   # every route really was exercised
    assert httpx_ok(server)


@pytest.mark.slow
def test_the_api_fuzz_long(server: Server) -> None:
    fuzz(server, examples=60)
    assert httpx_ok(server)


def httpx_ok(server: Server) -> bool:
    import httpx

    return httpx.get(server.url + "/health", timeout=10).status_code == 200
