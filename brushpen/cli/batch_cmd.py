"""`brushpen batch`: the CLI face of the API's batch jobs, straight on the job store.

`submit FILE.jsonl` queues an OpenAI-format batch file (the same lines `POST /v1/files` and
`POST /v1/batches` take), `status [ID]` shows a batch, or with no id the queue and the workers,
`results ID` writes its output and error files, `cancel ID` stops it. The work is done by whatever
worker serves the store: the studio's own, or `brushpen worker` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from brushpen.errors import BadInput
from brushpen.generators.jobs_db import URL_ENV
from brushpen.store import atomic_write_bytes


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("batch", help="submit and follow batch jobs (OpenAI's batch file format)")
    b.add_argument("--jobs-url", default=None, metavar="URL",
                   help="the job store (default: $BRUSHPEN_JOBS_URL, else the SQLite file under $BRUSHPEN_HOME)")
    bs = b.add_subparsers(dest="action", required=True)
    s = bs.add_parser("submit", help="queue a batch file; prints the batch id")
    s.add_argument("file", type=Path, help="JSONL: one {custom_id, method, url, body} per line")
    s.add_argument("--endpoint", default=None, help="the lines' url (default: the first line's)")
    s.add_argument("--user", default=None, help="the fairness key: batches of one user share the workers' turns "
                                                "with other users' (default: the batch is its own key)")
    s.add_argument("--wait", action="store_true", help="wait until the batch is finished")
    st = bs.add_parser("status", help="a batch's progress, or with no id the open batches and the workers")
    st.add_argument("id", nargs="?", default=None)
    st.add_argument("--json", action="store_true")
    r = bs.add_parser("results", help="write a finished batch's output (and error) file")
    r.add_argument("id")
    r.add_argument("-o", "--output", type=Path, default=None, help="output file (default: ID_output.jsonl)")
    c = bs.add_parser("cancel", help="stop a batch; lines already done stay in its output")
    c.add_argument("id")
    b.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    from brushpen.generators.jobs import JobStore

    if args.jobs_url:
        os.environ[URL_ENV] = args.jobs_url
    store = JobStore()
    return {"submit": _submit, "status": _status, "results": _results, "cancel": _cancel}[args.action](store, args)


def _submit(store, args: argparse.Namespace) -> int:
    from brushpen.api.service import BATCH_ENDPOINTS
    from brushpen.generators.jobs import parse_batch_file

    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read {args.file}: {e.strerror}") from None
    endpoint = args.endpoint
    if endpoint is None:
        first = next((line for line in data.decode("utf-8", "replace").splitlines() if line.strip()), "{}")
        try:
            endpoint = json.loads(first).get("url")
        except (json.JSONDecodeError, AttributeError):
            endpoint = None
    parse_batch_file(data, endpoint, BATCH_ENDPOINTS)   # a broken file is refused before it is stored
    record = store.add_file(args.file.name, "batch", data)
    batch = store.create_batch(record.id, endpoint, "24h", {"user": args.user} if args.user else None,
                               BATCH_ENDPOINTS)
    print(batch.id)
    print(f"{batch.total} lines queued on {store.describe()}; a studio or `brushpen worker` runs them",
          file=sys.stderr)
    if args.wait:
        while store.get_batch(batch.id).status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(1.0)
        return _status(store, argparse.Namespace(id=batch.id, json=False))
    return 0


def _status(store, args: argparse.Namespace) -> int:
    if args.id:
        b = store.get_batch(args.id)
        if args.json:
            print(json.dumps(asdict(b), indent=2))
        else:
            print(f"{b.id}  {b.status}  {b.completed + b.failed}/{b.total} lines ({b.failed} failed)  {b.endpoint}")
        return 0
    batches, workers = store.open_batches(), store.workers()
    if args.json:
        print(json.dumps({"batches": [asdict(b) for b in batches], "workers": [asdict(w) for w in workers]}, indent=2))
        return 0
    print(f"open batches ({len(batches)}):")
    for b in batches:
        print(f"  {b.id}  {b.status}  {b.completed + b.failed}/{b.total}  {b.endpoint}")
    now = time.time()
    print(f"workers ({len(workers)}):")
    for w in workers:
        print(f"  {w.id}  families {w.families}  {w.lines_done} done, {w.lines_failed} failed, "
              f"heartbeat {now - w.heartbeat_at:.0f} s ago")
    return 0


def _results(store, args: argparse.Namespace) -> int:
    b = store.get_batch(args.id)
    if b.output_file_id is None and b.error_file_id is None:
        raise BadInput(f"batch {b.id} is {b.status} and has no output yet")
    out = args.output or Path(f"{b.id}_output.jsonl")
    for file_id, path in ((b.output_file_id, out), (b.error_file_id, out.with_name(out.stem + "_errors.jsonl"))):
        if file_id:
            atomic_write_bytes(path, store.file_content(file_id))
            print(path)
    return 0


def _cancel(store, args: argparse.Namespace) -> int:
    b = store.cancel(args.id)
    print(f"{b.id}  {b.status}")
    return 0
