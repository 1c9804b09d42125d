"""`brushpen worker`: a process that only runs jobs (batch lines and fine-tuning) from the job store.

Start any number of them, on any machines that reach the database (`--jobs-url postgresql://...`
or `BRUSHPEN_JOBS_URL`), beside API replicas started with `brushpen studio --no-worker`. With
`--concurrency N` it supervises N worker processes, one per core is the usual choice: a process
each, not a thread each, because torch runs one model's requests one at a time within a process.
A child that dies is started again; SIGTERM or Ctrl-C stops them after their current line.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from brushpen.config import apply_threads, use_engine
from brushpen.generators.jobs_db import URL_ENV


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="run batch and fine-tuning jobs from the job store (no API, no UI)")
    w.add_argument("--jobs-url", default=None, metavar="URL",
                   help="the job store: postgresql://... (default: $BRUSHPEN_JOBS_URL, else the SQLite file "
                        "under $BRUSHPEN_HOME, shared with a studio on this machine)")
    w.add_argument("--concurrency", type=int, default=1, help="worker processes to run (default 1)")
    w.add_argument("--engine", default=None, metavar="URL",
                   help="an OpenAI-compatible engine (llama-server, vLLM, Ollama, ...) whose models "
                        "serve as engine/ID: its API root, e.g. http://127.0.0.1:8080/v1 "
                        "(default: $BRUSHPEN_ENGINE_URL)")
    w.add_argument("--families", default="", help="run only these kinds of job: images,text,finetune "
                                                  "(aliases gan, copy; default: all)")
    w.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: the cores divided among the processes)")
    w.add_argument("--lease", type=float, default=None,
                   help="seconds a line stays claimed without a heartbeat (default $BRUSHPEN_LEASE_S or 60)")
    w.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue")
    w.add_argument("--once", action="store_true", help="run until the queue is empty, then exit")
    w.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    w.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from brushpen.generators.worker import parse_families

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.jobs_url:
        os.environ[URL_ENV] = args.jobs_url
    use_engine(args.engine)
    parse_families(args.families)   # a bad name is refused before any process starts
    if args.concurrency < 1:
        from brushpen.errors import BadParameter
        raise BadParameter("--concurrency must be at least 1")
    if args.concurrency > 1:
        return _supervise(args)
    return _run_one(args)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _run_one(args: argparse.Namespace) -> int:
    from brushpen.api import handlers, service
    from brushpen.generators.jobs import JobStore
    from brushpen.generators.worker import Worker

    threads = apply_threads(args.threads)
    store = JobStore()
    worker = Worker(store, functools.partial(service.run_line, jobs=store), handlers.status_error_body,
                    poll_s=args.poll, families=args.families, lease_s=args.lease)
    print(f"brushpen worker {worker.id} on {store.describe()}: families {','.join(worker.families)}, "
          f"torch threads {threads}, lease {worker.lease_s:g} s", file=sys.stderr, flush=True)
    if args.once:
        worker.run_until_idle()
        worker.stop()
        return 0
    stop = _stop_event()
    worker.start()
    stop.wait()
    print("stopping after the current line", file=sys.stderr, flush=True)
    worker.stop(timeout=60)
    return 0


def _supervise(args: argparse.Namespace) -> int:
    """Run `--concurrency` single workers as child processes; start again any that dies."""
    n = args.concurrency
    threads = args.threads or max(1, (os.cpu_count() or 1) // n)
    child = [sys.executable, "-m", "brushpen.cli.main", "worker", "--concurrency", "1", "--threads", str(threads),
             "--families", args.families, "--poll", str(args.poll), "--log-level", args.log_level,
             *(["--lease", str(args.lease)] if args.lease else []), *(["--once"] if args.once else [])]
    stop = _stop_event()
    procs = [subprocess.Popen(child) for _ in range(n)]
    print(f"brushpen worker: {n} processes, {threads} torch threads each", file=sys.stderr, flush=True)
    while not stop.is_set():
        for i, p in enumerate(procs):
            code = p.poll()
            if code is None:
                continue
            if args.once and code == 0:
                continue
            print(f"worker process {p.pid} exited with {code}; starting another", file=sys.stderr, flush=True)
            procs[i] = subprocess.Popen(child)
        if args.once and all(p.poll() == 0 for p in procs):
            return 0
        stop.wait(1.0)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.time() + 90
    for p in procs:
        try:
            p.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    return 0
