"""The worker that runs batch lines and fine-tuning jobs from the job store.

The studio runs one in a thread beside the API (the embedded default); `brushpen worker` runs
only this, as many processes on as many machines as the database serves. A worker claims one line
at a time with a lease (`JobStore.claim`), runs it with the `LineRunner` it was given, and commits
its result; a heartbeat thread extends the leases of the lines it is running, so a long fine-tuning
job keeps its line, and a worker that dies loses its lines to the others once its leases run out.
A worker can be limited to some families of work (`--families images,text`), so one machine with a
GPU can take the fine-tuning jobs while small ones take the images. A line whose copy engine
(`engine/ID` models) cannot be reached waits for it, up to `BRUSHPEN_ENGINE_WAIT_S`, and runs again,
as a result waits out a database restart: an engine restart fails no line.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Callable, Collection

from brushpen.errors import BadParameter, BrushpenError, EngineUnavailable
from brushpen.generators.jobs import MAX_ATTEMPTS, Claim, JobStore, line_seed, set_current_batch
from brushpen.generators.jobs_db import StoreUnavailable
from brushpen.store import scrub_paths

log = logging.getLogger(__name__)

LineRunner = Callable[[str, dict], "tuple[int, dict]"]   # (endpoint, body) -> (status, body)
ErrorBody = Callable[[int, str], dict]                   # (status, message) -> the line's response body
# What each family of work is, by the endpoints of its lines.
FAMILIES: dict[str, tuple[str, ...]] = {
    "images": ("/v1/images/generations",),
    "text": ("/v1/completions", "/v1/chat/completions"),
    "finetune": ("/v1/fine_tuning/jobs",),
}
ALIASES = {"gan": "images", "image": "images", "copy": "text", "fine-tune": "finetune", "fine_tuning": "finetune"}
LEASE_S = float(os.environ.get("BRUSHPEN_LEASE_S", "60"))
ENGINE_WAIT_S = float(os.environ.get("BRUSHPEN_ENGINE_WAIT_S", "600"))   # then the line fails with a 502
ENGINE_RETRY_MAX_S = 30.0


class _Released(Exception):
    """The worker stopped while a line waited for its engine: the line is left pending, uncommitted."""


def parse_families(value: str | Collection[str] | None) -> list[str]:
    """`images,text` (or `gan`, `copy`, ...) -> the family names; None or empty: all of them."""
    names = value.split(",") if isinstance(value, str) else list(value or ())
    names = [ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise BadParameter(f"unknown job families {', '.join(unknown)}: expected some of {', '.join(FAMILIES)}")
    return names or list(FAMILIES)


def endpoints_of(families: Collection[str]) -> tuple[str, ...]:
    return tuple(e for f in families for e in FAMILIES[f])


class Worker:
    """Runs lines in `concurrency` threads; `wake()` after a create or cancel so it need not wait for
    its poll. `error_body` makes the response of a line that fails outside `run_line` (it raised, or
    it stopped its worker too often), so every error line has the shape of the runner's own."""

    def __init__(self, store: JobStore, run_line: LineRunner, error_body: ErrorBody, poll_s: float = 1.0,
                 families: Collection[str] | None = None, concurrency: int = 1, lease_s: float | None = None):
        self.store, self.run_line, self.error_body, self.poll_s = store, run_line, error_body, poll_s
        self.families = parse_families(families)
        self.endpoints = endpoints_of(self.families)
        self.lease_s = lease_s or LEASE_S
        self.id = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._running: dict[int, tuple[str, int]] = {}   # thread id -> the line it runs
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"brushpen-worker-{i}", daemon=True)
                         for i in range(max(1, concurrency))]
        self._beat = threading.Thread(target=self._heartbeat, name="brushpen-worker-heartbeat", daemon=True)
        self._registered = False

    def start(self) -> None:
        self._register()
        for t in (*self._threads, self._beat):
            t.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        try:
            self.store.retire_worker(self.id)
        except StoreUnavailable:   # its leases run out on their own
            pass

    def run_until_idle(self) -> None:
        """Run lines in this thread until none is left to claim (the CLI's `--once`, and tests)."""
        self._register()
        if not self._beat.is_alive():   # a long line (fine-tuning) keeps its lease
            self._beat.start()
        while self._step():
            pass
        self.store.settle()

    def _register(self) -> None:
        while not self._registered:
            try:
                self.store.register_worker(self.id, self.families)
                self._registered = True
            except StoreUnavailable as e:
                if self._stop.is_set():
                    return
                log.warning("%s; retrying", e)
                self._stop.wait(self.poll_s)

    def _loop(self) -> None:
        last_settle = 0.0
        while not self._stop.is_set():
            try:
                if not self._registered:
                    self._register()
                if time.monotonic() - last_settle > self.poll_s:
                    self.store.settle()
                    last_settle = time.monotonic()
                if self._step():
                    continue
            except StoreUnavailable as e:
                log.warning("%s; the worker waits for it", e)
            except Exception:  # a broken database must not kill the worker silently forever
                log.exception("worker error; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.5, self.lease_s / 4)):
            with self._guard:
                running = list(self._running.values())
            try:
                self.store.heartbeat(self.id, running, self.lease_s)
            except Exception:
                log.warning("heartbeat failed; retrying", exc_info=True)

    def _step(self) -> bool:
        """Claim and run one line; False when there was none."""
        claim = self.store.claim(self.id, self.endpoints, self.lease_s)
        if claim is None:
            return False
        me = threading.get_ident()
        with self._guard:
            self._running[me] = (claim.batch_id, claim.idx)
        try:
            start = time.perf_counter()
            status_code, response = self._run(claim)
            self._commit(claim, status_code, response, time.perf_counter() - start)
        except _Released:
            pass   # it runs again, here or elsewhere, with the same seed
        finally:
            with self._guard:
                self._running.pop(me, None)
        return True

    def _run(self, claim: Claim) -> tuple[int, dict]:
        if claim.attempts >= MAX_ATTEMPTS:
            return 500, self.error_body(500, f"this request stopped its worker {claim.attempts} times; "
                                             f"it was not retried again")
        body = dict(claim.body)
        body.setdefault("seed", line_seed(claim.batch_id, claim.idx))
        set_current_batch(claim.batch_id)
        try:
            return self._run_waiting(claim, body)
        except BrushpenError as e:
            status = getattr(e, "http_status", 400)
            return status, self.error_body(status, scrub_paths(str(e)))
        except Exception as e:  # one broken line fails alone; the batch goes on
            log.exception("batch line failed")
            return 500, self.error_body(500, f"internal error ({type(e).__name__}); see the server log")
        finally:
            set_current_batch(None)

    def _run_waiting(self, claim: Claim, body: dict) -> tuple[int, dict]:
        """`run_line`, again after a growing pause while its engine cannot be reached (the heartbeat
        keeps the lease meanwhile); past `ENGINE_WAIT_S` the line fails with the engine's error."""
        deadline, pause = time.monotonic() + ENGINE_WAIT_S, self.poll_s
        while True:
            try:
                return self.run_line(claim.endpoint, body)
            except EngineUnavailable as e:
                if self._stop.is_set():
                    raise _Released() from None
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("%s; %s line %d runs again in %.0f s", e, claim.batch_id, claim.idx, pause)
                if self._stop.wait(pause):
                    raise _Released() from None
                pause = min(2 * pause, ENGINE_RETRY_MAX_S)

    def _commit(self, claim: Claim, status_code: int, response: dict, seconds: float) -> None:
        """Keep the result until the database takes it: a database restart loses no finished line."""
        while True:
            try:
                if self.store.finish_line(claim.batch_id, claim.idx, status_code, response, self.id, seconds):
                    self.store.settle()
                return
            except StoreUnavailable as e:
                if self._stop.is_set():
                    return   # the line stays pending and runs again elsewhere, with the same seed
                log.warning("%s; holding the result of %s line %d", e, claim.batch_id, claim.idx)
                self._stop.wait(self.poll_s)
