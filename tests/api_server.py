"""Start the real `brushpen studio` server as a child process for the API tests, and stop it.

The server gets a private BRUSHPEN_HOME whose `models/smollm2-135m` links to the copy converted
once into the real home (so no test pays the 25 s conversion twice), a store holding a tiny
class-conditional GAN, one torch thread, and a free port.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from conftest import PYTHON, REPO, subprocess_env, tiny_generator

BRIEF = "Reusable steel water bottle that keeps drinks cold for 24 hours"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app, timeout: float = 60) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free port in this process; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def make_home(root: Path) -> Path:
    """A private home whose base copy model links to the one converted in the real home."""
    from brushpen.text.base import BASE_NAME, convert_base

    home = root / "home"
    (home / "models").mkdir(parents=True, exist_ok=True)
    real = convert_base()   # returns at once when the converted copy exists
    link = home / "models" / BASE_NAME
    if not link.exists():
        link.symlink_to(real.resolve(), target_is_directory=True)
    return home


def make_store(root: Path) -> Path:
    """A weight store with one tiny 16x16 GAN, `shapes`, drawing Circles, Squares and Flags."""
    from brushpen.gan.pipeline import StyleGANPipeline

    store = root / "weights"
    if not (store / "gan" / "shapes").exists():
        StyleGANPipeline(tiny_generator()).save_pretrained(store / "gan" / "shapes")
    return store


class Server:
    """`brushpen studio` (with `--no-ui` unless `ui`) on a free port; `start()` waits until /health answers."""

    def __init__(self, home: Path, store: Path, api_key: str | None = None, log: Path | None = None,
                 ui: bool = False, args: tuple[str, ...] = (), **env: str):
        self.home, self.store, self.api_key, self.ui, self.args = home, store, api_key, ui, tuple(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or home.parent / f"server-{self.port}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for /health; returns the seconds it took."""
        args = [PYTHON, "-m", "brushpen.cli.main", "studio", *([] if self.ui else ["--no-ui"]),
                "--port", str(self.port), *self.args]
        if self.api_key:
            args += ["--api-key", self.api_key]
        env = subprocess_env(BRUSHPEN_HOME=str(self.home), BRUSHPEN_WEIGHTS=str(self.store), **self.env)
        env.pop("BRUSHPEN_API_KEY", None)
        start = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self, **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", self.api_key or "none"),
                      max_retries=0, timeout=120, **kw)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

