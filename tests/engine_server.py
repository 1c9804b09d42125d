"""A real OpenAI-compatible copy engine for tests and benchmarks: `transformers serve` (shipped in
transformers, so it runs offline) on the converted SmolLM2 base, listed by the engine as `smollm2`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from brushpen.text.base import convert_base


def sampling_folder(root: Path) -> Path:
    """`root/smollm2`: the base's files, linked, with a generation config that samples (`do_sample`),
    as an engine deployed for copy would be set up."""
    base = convert_base()
    folder = root / "smollm2"
    folder.mkdir(parents=True)
    for f in base.iterdir():
        if f.name != "generation_config.json":
            (folder / f.name).symlink_to(f.resolve())
    gen = json.loads((base / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "do_sample": True}))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(folder: Path, log: Path, threads: int = 1, timeout: float = 180,
                 port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`transformers serve` on `folder` (on `port`, else a free one), started beside it so it lists
    the model by its short name; returns the process and the API root once /v1/models answers."""
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", folder.name,
                                 "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                cwd=folder.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_engine(proc)
            raise RuntimeError(f"transformers serve did not start:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)


def stop_engine(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
