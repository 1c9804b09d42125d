"""Bad input against a live server: every kind we know of, and how the server answered.

Starts `brushpen studio --no-ui` with an API key on a private home (the shipped store, one torch
thread), sends each case once, and sorts the answers into: a clean refusal (the status the case
expects, a JSON error body with a message), a 5xx, a hang (no answer in `--timeout` seconds), a
leaked traceback or server path in the body, and "other" (an answer that is none of these, e.g.
a 2xx where a refusal was due). It prints one line per case, then the table BENCHMARKS.md keeps
("Bad input"), and exits 1 unless the last four columns are all 0.

    .venv/bin/python benchmarks/bad_input.py [--timeout 60] [--only SUBSTRING] [--json out.json]

A case expects either a 4xx (any, or a named one), or "item": a 200 whose per-image row carries the
error (the checker reports a bad file in its batch report and still scores the rest, as a
moderation tool should). A batch line whose body is wrong (an unknown field, n = 0) is not here: by
design it is accepted at upload and fails alone, in the batch's error file (tests/test_batches.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
KEY = "bad-input-bench-key"
BRIEF = "Reusable steel water bottle that keeps drinks cold for 24 hours"
LEAKS = re.compile(r"Traceback \(most recent|File \"/|site-packages|/root/|/home/|/tmp/|\.py\", line")


@dataclass
class Case:
    name: str
    method: str
    path: str
    expect: str = "4xx"                  # "4xx", "401", "404", "413", ..., or "item"
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: str | None = KEY                # the bearer key sent; None: no Authorization header
    raw: bytes | None = None             # sent as-is on a socket instead of through httpx
    protocol: bool = False               # refused by the HTTP server itself: plain text, not our JSON


def png_bytes(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_bomb(megabytes: int = 1024) -> bytes:
    """One member that inflates to `megabytes` MB of zeros from about 1 MB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("real/zeros.png", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(chunk)
    return buf.getvalue()


def cases() -> list[Case]:
    img = "/v1/images/generations"
    chat = "/v1/chat/completions"
    comp = "/v1/completions"
    good_chat = {"messages": [{"role": "user", "content": BRIEF}], "max_tokens": 4}

    def j(body: Any) -> dict:
        return {"json": body}

    def raw_json(text: str | bytes, ctype: str = "application/json") -> dict:
        return {"content": text.encode() if isinstance(text, str) else text, "headers": {"content-type": ctype}}

    def files(name: str, data: bytes, purpose: str = "batch") -> dict:
        return {"files": {"file": (name, data)}, "data": {"purpose": purpose}}

    def detect(*parts: tuple[str, bytes], **form: str) -> dict:
        return {"files": [("file", p) for p in parts], "data": form}

    out = [
        # ---- the key
        Case("no Authorization header", "GET", "/v1/models", "401", key=None),
        Case("wrong key", "GET", "/v1/models", "401", key="nope"),
        Case("key with a suffix", "GET", "/v1/models", "401", key=KEY + "x"),
        Case("Basic scheme", "GET", "/v1/models", "401", kwargs={"headers": {"authorization": "Basic " + KEY}}, key=None),
        Case("Bearer without a key", "GET", "/v1/models", "401", kwargs={"headers": {"authorization": "Bearer"}}, key=None),
        Case("non-ASCII key bytes", "GET", "/v1/models", "401",
             kwargs={"headers": {"authorization": "Bearer \u00e9\u00e9".encode("latin-1")}}, key=None),
        Case("unknown /v1 path without a key", "GET", "/v1/nothing-here", "401", key=None),
        # ---- bodies
        Case("malformed JSON", "POST", img, kwargs=raw_json('{"n": 1,')),
        Case("JSON array body", "POST", img, kwargs=raw_json("[1, 2]")),
        Case("JSON null body", "POST", img, kwargs=raw_json("null")),
        Case("empty body", "POST", chat, kwargs=raw_json("")),
        Case("nesting 100,000 deep", "POST", img, kwargs=raw_json("[" * 100_000 + "]" * 100_000)),
        Case("UTF-16 body", "POST", chat, kwargs=raw_json(json.dumps(good_chat).encode("utf-16"))),
        Case("invalid UTF-8 bytes", "POST", chat, kwargs=raw_json(b'{"messages": "\xff\xfe\xfd"}')),
        Case("body over 1 MiB", "POST", chat, "413", kwargs=raw_json(json.dumps({"x": "a" * (2 << 20)}))),
        Case("text/plain body", "POST", chat, kwargs=raw_json(json.dumps(good_chat), "text/plain")),
        Case("NaN literal", "POST", img, kwargs=raw_json('{"model": "emoji64", "truncation_psi": NaN}')),
        Case("Infinity literal", "POST", img, kwargs=raw_json('{"model": "emoji64", "guidance": Infinity}')),
        Case("duplicate keys, last one bad", "POST", img, kwargs=raw_json('{"n": 1, "n": 0}')),
        # ---- images
        Case("unknown image field", "POST", img, kwargs=j({"model": "emoji64", "colour": "red"})),
        Case("n = 0", "POST", img, kwargs=j({"model": "emoji64", "n": 0})),
        Case("n = 10^9", "POST", img, kwargs=j({"model": "emoji64", "n": 10**9})),
        Case("n as a word", "POST", img, kwargs=j({"model": "emoji64", "n": "many"})),
        Case("n as a fraction", "POST", img, kwargs=j({"model": "emoji64", "n": 1.5})),
        Case("size not WxH", "POST", img, kwargs=j({"model": "emoji64", "size": "big"})),
        Case("size 100000x100000", "POST", img, kwargs=j({"model": "emoji64", "size": "100000x100000"})),
        Case("size negative", "POST", img, kwargs=j({"model": "emoji64", "size": "-64x64"})),
        Case("unknown image model", "POST", img, "404", kwargs=j({"model": "no-such-model"})),
        Case("absolute path as model", "POST", img, kwargs=j({"model": "/etc"})),
        Case("dot-dot as model", "POST", img, kwargs=j({"model": "../../etc/passwd"})),
        Case("dot-dot adapter", "POST", img, kwargs=j({"model": "emoji64:../../x"})),
        Case("response_format xml", "POST", img, kwargs=j({"model": "emoji64", "response_format": "xml"})),
        Case("quality hd", "POST", img, kwargs=j({"model": "emoji64", "quality": "hd"})),
        Case("style vivid", "POST", img, kwargs=j({"model": "emoji64", "style": "vivid"})),
        Case("output_compression 50", "POST", img, kwargs=j({"model": "emoji64", "output_compression": 50})),
        Case("seed 2^70", "POST", img, kwargs=j({"model": "emoji64", "seed": 2**70})),
        Case("seed negative", "POST", img, kwargs=j({"model": "emoji64", "seed": -1})),
        Case("truncation 5", "POST", img, kwargs=j({"model": "emoji64", "truncation_psi": 5})),
        Case("unknown class label", "POST", img, kwargs=j({"model": "emoji64", "label": "no-such-class"})),
        Case("prompt of 100k chars", "POST", img, kwargs=j({"model": "emoji64", "prompt": "x" * 100_000})),
        Case("noise_mode loud", "POST", img, kwargs=j({"model": "emoji64", "noise_mode": "loud"})),
        Case("mix_cutoff 1000", "POST", img, kwargs=j({"model": "emoji64", "mix_seed": 1, "mix_cutoff": 1000})),
        # ---- copy
        Case("messages missing", "POST", chat, kwargs=j({"max_tokens": 4})),
        Case("messages empty", "POST", chat, kwargs=j({"messages": []})),
        Case("65 messages", "POST", chat, kwargs=j({"messages": [{"role": "user", "content": "a"}] * 65})),
        Case("role hacker", "POST", chat, kwargs=j({"messages": [{"role": "hacker", "content": BRIEF}]})),
        Case("content an object", "POST", chat, kwargs=j({"messages": [{"role": "user", "content": {"a": 1}}]})),
        Case("max_tokens -1", "POST", chat, kwargs=j({**good_chat, "max_tokens": -1})),
        Case("max_tokens 10^9", "POST", chat, kwargs=j({**good_chat, "max_tokens": 10**9})),
        Case("n 100", "POST", chat, kwargs=j({**good_chat, "n": 100})),
        Case("temperature -1", "POST", chat, kwargs=j({**good_chat, "temperature": -1})),
        Case("temperature a word", "POST", chat, kwargs=j({**good_chat, "temperature": "hot"})),
        Case("top_p 2", "POST", chat, kwargs=j({**good_chat, "top_p": 2})),
        Case("stream yes", "POST", chat, kwargs=j({**good_chat, "stream": "yes"})),
        Case("zero-width brief", "POST", chat, kwargs=j({"messages": [{"role": "user", "content": "\u200b\u200c\u200d"}]})),
        Case("blank brief", "POST", chat, kwargs=j({"messages": [{"role": "user", "content": "   \n\t "}]})),
        Case("brief of 100k chars", "POST", chat, kwargs=j({"messages": [{"role": "user", "content": "x" * 100_000}]})),
        Case("unknown copy kind", "POST", chat, kwargs=j({**good_chat, "kind": "sonnet"})),
        Case("unknown text model", "POST", chat, "404", kwargs=j({**good_chat, "model": "no-such-model"})),
        Case("absolute path as text model", "POST", chat, kwargs=j({**good_chat, "model": "/root"})),
        Case("unknown backend", "POST", chat, kwargs=j({**good_chat, "backend": "cuda"})),
        Case("completion prompt an int", "POST", comp, kwargs=j({"prompt": 12, "max_tokens": 4})),
        Case("completion prompt missing", "POST", comp, kwargs=j({"max_tokens": 4})),
        Case("completion prompt list of 10,000", "POST", comp, kwargs=j({"prompt": [BRIEF] * 10_000, "max_tokens": 4})),
        # ---- files and batches
        Case("upload without a file", "POST", "/v1/files", kwargs={"data": {"purpose": "batch"}}),
        Case("upload without a purpose", "POST", "/v1/files", kwargs={"files": {"file": ("a.jsonl", b"{}\n")}}),
        Case("upload purpose assistants", "POST", "/v1/files", kwargs=files("a.jsonl", b"{}\n", "assistants")),
        Case("batch file not .jsonl", "POST", "/v1/files", kwargs=files("a.exe", b"MZ\x90\x00")),
        Case("batch file of binary", "POST", "/v1/files", kwargs=files("a.jsonl", os.urandom(4096))),
        Case("batch line not JSON", "POST", "/v1/files", kwargs=files("a.jsonl", b'{"custom_id": "1"}\nnot json\n')),
        Case("batch line with a bad url", "POST", "/v1/files", kwargs=files("a.jsonl", json.dumps(
            {"custom_id": "1", "method": "POST", "url": "/v1/evil", "body": {}}).encode() + b"\n")),
        Case("batch line with a GET", "POST", "/v1/files", kwargs=files("a.jsonl", json.dumps(
            {"custom_id": "1", "method": "GET", "url": img, "body": {}}).encode() + b"\n")),
        Case("batch with a repeated custom_id", "POST", "/v1/files", kwargs=files("a.jsonl", (json.dumps(
            {"custom_id": "1", "method": "POST", "url": img, "body": {}}) + "\n") .encode() * 2)),
        Case("batch file over 32 MiB", "POST", "/v1/files", "413", kwargs=files("a.jsonl", b"{}\n" * (12 << 20))),
        Case("fine-tune zip bomb", "POST", "/v1/files", kwargs=files("bomb.zip", zip_bomb(), "fine-tune")),
        Case("fine-tune zip-slip", "POST", "/v1/files", kwargs=files("slip.zip", zip_of(
            {"../../evil.png": png_bytes(), "real/a.png": png_bytes()}), "fine-tune")),
        Case("fine-tune zip corrupt", "POST", "/v1/files", kwargs=files("bad.zip", b"PK\x03\x04" + os.urandom(500), "fine-tune")),
        Case("fine-tune file .exe", "POST", "/v1/files", kwargs=files("a.exe", b"MZ", "fine-tune")),
        Case("unknown file id", "GET", "/v1/files/file-nope", "404"),
        Case("file id with dot-dot", "GET", "/v1/files/..%2F..%2Fetc%2Fpasswd/content", "404"),
        Case("batch of an unknown file", "POST", "/v1/batches", kwargs=j(
            {"input_file_id": "file-nope", "endpoint": img, "completion_window": "24h"})),
        Case("batch endpoint not ours", "POST", "/v1/batches", kwargs=j(
            {"input_file_id": "file-nope", "endpoint": "/v1/evil", "completion_window": "24h"})),
        Case("unknown batch", "GET", "/v1/batches/batch_nope", "404"),
        Case("cancel an unknown batch", "POST", "/v1/batches/batch_nope/cancel", "404"),
        Case("batch list limit -1", "GET", "/v1/batches?limit=-1"),
        Case("batch list limit a word", "GET", "/v1/batches?limit=ten"),
        # ---- the checker
        Case("detection without a file", "POST", "/v1/detections", kwargs={"data": {"heatmaps": "false"}, "files": {}}),
        Case("detection of random bytes", "POST", "/v1/detections", "item", kwargs=detect(("a.png", os.urandom(2048)))),
        Case("detection of a truncated PNG", "POST", "/v1/detections", "item", kwargs=detect(("a.png", png_bytes((64, 64))[:60]))),
        Case("detection of a text file", "POST", "/v1/detections", "item", kwargs=detect(("a.png", b"hello, world\n" * 10))),
        Case("detection of a 20000x20000 PNG", "POST", "/v1/detections", "item", kwargs=detect(
            ("big.png", png_bytes((20000, 20000), "1")))),
        Case("detection model a path", "POST", "/v1/detections", kwargs=detect(("a.png", png_bytes()), model="/etc")),
        Case("detection heatmaps maybe", "POST", "/v1/detections", kwargs=detect(("a.png", png_bytes()), heatmaps="maybe")),
        Case("detection scope_gate maybe", "POST", "/v1/detections", kwargs=detect(("a.png", png_bytes()), scope_gate="maybe")),
        Case("detection JSON with bad base64", "POST", "/v1/detections", "item", kwargs=j(
            {"images": [{"b64_json": "!!!not base64!!!"}]})),
        Case("detection JSON no images", "POST", "/v1/detections", kwargs=j({"images": []})),
        Case("detection of 101 files", "POST", "/v1/detections", kwargs=detect(*[("a.png", png_bytes())] * 101)),
        # ---- fine-tuning
        Case("fine-tune model /tmp", "POST", "/v1/fine_tuning/jobs", kwargs=j(
            {"model": "/tmp", "training_file": "file-nope", "suffix": "x"})),
        Case("fine-tune unknown file", "POST", "/v1/fine_tuning/jobs", kwargs=j(
            {"model": "emoji64", "training_file": "file-nope", "suffix": "x"})),
        Case("fine-tune suffix dot-dot", "POST", "/v1/fine_tuning/jobs", kwargs=j(
            {"model": "emoji64", "training_file": "file-nope", "suffix": "../x"})),
        Case("fine-tune epochs -1", "POST", "/v1/fine_tuning/jobs", kwargs=j(
            {"model": "emoji64", "training_file": "file-nope", "suffix": "x", "hyperparameters": {"n_epochs": -1}})),
        Case("unknown fine-tune job", "GET", "/v1/fine_tuning/jobs/ftjob-nope", "404"),
        Case("events of an unknown job", "GET", "/v1/fine_tuning/jobs/ftjob-nope/events", "404"),
        # ---- routes and HTTP
        Case("unknown /v1 path", "GET", "/v1/nothing-here", "404"),
        Case("DELETE on /v1/models", "DELETE", "/v1/models", "405"),
        Case("model id with dot-dot", "GET", "/v1/models/..%2F..%2Fetc", "404"),
        Case("unknown image token", "GET", "/images/nope.png", "404", key=None),
        Case("image token with dot-dot", "GET", "/images/..%2F..%2Fetc%2Fpasswd.png", "404", key=None),
        Case("1 MB header", "GET", "/health", "400", kwargs={"headers": {"x-junk": "a" * (1 << 20)}}, key=None,
             protocol=True),
        Case("garbage request line", "RAW", "", raw=b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"),
        Case("HTTP/1.1 without Host", "RAW", "", raw=b"GET /health HTTP/1.1\r\n\r\n"),
        Case("Content-Length not a number", "RAW", "",
             raw=b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n"),
    ]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int) -> tuple[subprocess.Popen, str, Path]:
    from brushpen.text.base import BASE_NAME, convert_base

    root = Path(tempfile.mkdtemp(prefix="brushpen-bad-input-"))
    home = root / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / BASE_NAME).symlink_to(convert_base().resolve(), target_is_directory=True)
    port = free_port()
    env = {**os.environ, "BRUSHPEN_HOME": str(home), "BRUSHPEN_API_KEY": KEY, "BRUSHPEN_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1"}
    log = root / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "brushpen.cli.main", "studio", "--no-ui", "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")


def send_raw(url: str, data: bytes, timeout: float) -> tuple[int | None, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            if not chunks:
                raise
        reply = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return (int(m.group(1)) if m else None), reply


def judge(case: Case, status: int | None, body: bytes) -> str:
    """One of: clean, 5xx, leak, other (hang is decided by the caller)."""
    text = body.decode("utf-8", "replace")
    if LEAKS.search(text):
        return "leak"
    if status is None:
        return "clean" if case.method == "RAW" else "other"   # a raw garbage line may be answered by a close
    if status >= 500:
        return "5xx"
    if case.expect == "item":
        try:
            rows = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            return "other"
        return "clean" if status == 200 and rows and all(r.get("error") for r in rows) else "other"
    wanted = (400 <= status < 500) if case.expect == "4xx" else status == int(case.expect)
    if not wanted:
        return "other"
    if case.method == "RAW" or case.protocol or status == 413 and not text.strip():
        return "clean"
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return "other"    # a refusal without our error shape and a message
    return "clean" if isinstance(message, str) and message.strip() else "other"


def run_case(client: httpx.Client, url: str, case: Case, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        if case.raw is not None:
            status, body = send_raw(url, case.raw, timeout)
        else:
            kwargs = dict(case.kwargs)
            headers = dict(kwargs.pop("headers", {}))
            if case.key is not None:
                headers.setdefault("authorization", f"Bearer {case.key}")
            r = client.request(case.method, url + case.path, headers=headers, timeout=timeout, **kwargs)
            status, body = r.status_code, r.content
        verdict = judge(case, status, body)
    except (httpx.TimeoutException, TimeoutError):
        status, body, verdict = None, b"", "hang"
    except httpx.HTTPError as e:   # the connection was dropped: a clean close is fine for raw garbage only
        status, body, verdict = None, str(e).encode(), "other"
    seconds = time.perf_counter() - t0
    return {"case": case.name, "expect": case.expect, "status": status, "verdict": verdict,
            "seconds": round(seconds, 3), "body": body[:300].decode("utf-8", "replace")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--only", default=None, help="run the cases whose name holds this")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    todo = [c for c in cases() if not args.only or args.only in c.name]
    proc, url, log = start_server(args.threads)
    results = []
    try:
        with httpx.Client() as client:
            for case in todo:
                row = run_case(client, url, case, args.timeout)
                results.append(row)
                print(f"{row['verdict']:6} {row['status'] or '-':>4} {row['seconds']:7.2f}s  {case.name}"
                      + ("" if row["verdict"] == "clean" else f"   {row['body'][:160]!r}"), flush=True)
                if proc.poll() is not None:
                    print(f"the server died after '{case.name}': {log.read_text()[-2000:]}")
                    break
        alive = proc.poll() is None and httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("clean", "5xx", "hang", "leak", "other")}
    print(f"\n| tried | clean 4xx | 5xx | hang | leaked traceback | other | server alive after |\n"
          f"|---|---|---|---|---|---|---|\n| {len(results)} | {counts['clean']} | {counts['5xx']} | {counts['hang']} "
          f"| {counts['leak']} | {counts['other']} | {'yes' if alive else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "alive": alive, "results": results}, indent=2))
    return 0 if alive and len(results) == len(todo) and counts["clean"] == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
