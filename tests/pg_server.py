"""A real PostgreSQL server for the tests: Debian's `postgresql`, in a temporary data directory, on a
free port, as an ordinary user (initdb refuses root, so under root it runs as `nobody`).

`make test` installs the binaries the way it installs chromium; where they cannot be found the
tests that need the server skip with a message saying so. `kill()` is a SIGKILL of the whole
server (postmaster and backends, as a crash or an OOM kill would be); `start()` again recovers
from its write-ahead log.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest


def find_bin(name: str) -> str | None:
    """A PostgreSQL program: Debian keeps them under /usr/lib/postgresql/VERSION/bin, off the PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, root: Path):
        self.initdb, self.postgres = find_bin("initdb"), find_bin("postgres")
        if not (self.initdb and self.postgres):
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql; `make test` does it)")
        self.root = root
        self.data = root / "pgdata"
        self.sock = root / "pgsock"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://brushpen@127.0.0.1:{self.port}/brushpen"
        self.proc: subprocess.Popen | None = None
        self.user = "nobody" if os.geteuid() == 0 else None

    def _run_as(self) -> dict:
        return {"user": self.user, "group": "nogroup"} if self.user else {}

    def init(self) -> None:
        self.data.mkdir(parents=True)
        self.sock.mkdir()
        if self.user:
            for p in (self.root, self.data, self.sock):
                shutil.chown(p, self.user, "nogroup")
        subprocess.run([self.initdb, "-D", str(self.data), "-U", "brushpen", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, cwd="/", **self._run_as())

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log, "ab")
        if self.user:
            shutil.chown(self.log, self.user, "nogroup")
        # fsync stays on: the SIGKILL test relies on committed lines surviving the crash.
        self.proc = subprocess.Popen([self.postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                                      "-k", str(self.sock), "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                                     stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                                     **self._run_as())
        start = time.time()
        while time.time() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2) as c:
                    c.autocommit = True
                    if not c.execute("SELECT 1 FROM pg_database WHERE datname='brushpen'").fetchone():
                        c.execute("CREATE DATABASE brushpen")
                return
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise RuntimeError(f"postgres did not start in {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, as a crash would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        time.sleep(0.5)   # let the kernel reap the backends before a restart checks shared memory

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)   # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def fresh_database(self, name: str) -> str:
        """A new empty database on this server; returns its url."""
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres():
    # Not under pytest's temporary folder: under root that one is closed to `nobody`.
    root = Path(tempfile.mkdtemp(prefix="brushpen-pg-"))
    server = PostgresServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
