"""SIGKILL the server again and again while it runs a batch: every line's output must appear once.

Starts `brushpen studio --no-ui` on a private home (the shipped store, 1 torch thread), uploads a
batch of `--lines` image requests for emoji64 (`--n` images each, a seed on every other line, the
rest seeded by the batch), and then `--kills` times: waits until at least one more line is done,
waits a random 0-`--jitter` seconds more, and kills the server with SIGKILL, then starts it again on
the same home. After the last restart it waits for the batch to complete, and checks:
- the output file holds every custom_id exactly once, the error file none;
- no line ran more than kills + 1 times, and the lines run twice are at most one per kill;
- every output equals an uninterrupted run of its line (the same request, its seed, sent to the
  same server directly), pixel for pixel.
Prints the counts and exits 1 when a check fails.

    .venv/bin/python benchmarks/fault_injection.py --lines 200 --kills 10
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

URL = "/v1/images/generations"


class Studio:
    def __init__(self, home: Path, threads: int):
        self.home, self.threads = home, threads
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        t0 = time.monotonic()
        env = {**os.environ, "BRUSHPEN_HOME": str(self.home), "BRUSHPEN_THREADS": str(self.threads),
               "HF_HUB_OFFLINE": "1"}
        log = (self.home.parent / "server.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "brushpen.cli.main", "studio", "--no-ui", "--port",
                                      str(self.port), "--log-level", "warning"], env=env, stdout=log, stderr=log)
        while time.monotonic() - t0 < 120:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit("the server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def line_rows(db: Path, batch_id: str) -> list[tuple[int, str, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT idx, status, attempts FROM lines WHERE batch_id=?", (batch_id,)).fetchall()
    finally:
        con.close()


def pixels(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--n", type=int, default=4, help="images per line")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--jitter", type=float, default=2.0, help="random extra seconds before each kill")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="brushpen-faults-")) / "home"
    home.mkdir(parents=True)
    db = home / "jobs" / "jobs.sqlite3"
    studio = Studio(home, args.threads)
    starts = [studio.start()]
    lines = [{"custom_id": f"l{i}", "method": "POST", "url": URL,
              "body": {"model": "emoji64", "n": args.n, **({"seed": 7 * i} if i % 2 == 0 else {})}}
             for i in range(args.lines)]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    up = httpx.post(studio.url + "/v1/files", data={"purpose": "batch"},
                    files={"file": ("faults.jsonl", data)}, timeout=60).json()
    batch = httpx.post(studio.url + "/v1/batches", json={"input_file_id": up["id"], "endpoint": URL,
                                                          "completion_window": "24h"}, timeout=60).json()
    done_at_kill = []
    for k in range(args.kills):
        before = sum(s == "done" for _, s, _ in line_rows(db, batch["id"]))
        deadline = time.monotonic() + 300
        while sum(s == "done" for _, s, _ in line_rows(db, batch["id"])) <= before:
            if time.monotonic() > deadline:
                raise SystemExit(f"no progress before kill {k + 1}")
            time.sleep(0.05)
        time.sleep(rng.uniform(0, args.jitter))
        studio.kill()
        done_at_kill.append(sum(s == "done" for _, s, _ in line_rows(db, batch["id"])))
        print(f"kill {k + 1}: {done_at_kill[-1]} of {args.lines} lines done", flush=True)
        if done_at_kill[-1] == args.lines:
            print("the batch finished before this kill: use more lines or images per line")
            break
        starts.append(studio.start())
    deadline = time.monotonic() + 1800
    while (state := httpx.get(f"{studio.url}/v1/batches/{batch['id']}", timeout=30).json())["status"] != "completed":
        if time.monotonic() > deadline or state["status"] in ("failed", "cancelled", "expired"):
            raise SystemExit(f"the batch ended {state['status']}")
        time.sleep(0.5)
    out = [json.loads(x) for x in httpx.get(f"{studio.url}/v1/files/{state['output_file_id']}/content",
                                             timeout=60).text.splitlines()]
    errors = []
    if state.get("error_file_id"):
        errors = httpx.get(f"{studio.url}/v1/files/{state['error_file_id']}/content", timeout=60).text.splitlines()
    ids = [r["custom_id"] for r in out]
    attempts = [a for _, _, a in line_rows(db, batch["id"])]
    kills = len(done_at_kill)
    mismatched = 0
    by_id = {r["custom_id"]: r for r in out}
    for i, ln in enumerate(lines):
        got = by_id.get(f"l{i}")
        if got is None:
            continue
        body = {**ln["body"], "seed": ln["body"].get("seed", _line_seed(got))}
        direct = httpx.post(studio.url + URL, json=body, timeout=120).json()["data"]
        if any(not np.array_equal(pixels(a["b64_json"]), pixels(b["b64_json"]))
               for a, b in zip(got["response"]["body"]["data"], direct)):
            mismatched += 1
    studio.stop()
    checks = {
        "every custom_id once": sorted(ids) == sorted(f"l{i}" for i in range(args.lines)),
        "no errors": not errors,
        "attempts <= kills + 1": max(attempts) <= kills + 1,
        "re-runs <= kills": sum(a - 1 for a in attempts) <= kills,
        "outputs equal direct runs": mismatched == 0,
    }
    print(f"\n| lines | images per line | kills | lines done at each kill | outputs | duplicates | missing "
          f"| errors | re-run lines | max attempts | outputs unlike a direct run | median restart |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.lines} | {args.n} | {kills} | {', '.join(map(str, done_at_kill))} | {len(ids)} "
          f"| {len(ids) - len(set(ids))} | {args.lines - len(set(ids))} | {len(errors)} "
          f"| {sum(a > 1 for a in attempts)} | {max(attempts)} | {mismatched} "
          f"| {sorted(starts)[len(starts) // 2]:.1f} s |")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


def _line_seed(record: dict) -> int:
    """The seed a line without one ran with, read back from its first image's PNG settings."""
    with Image.open(io.BytesIO(base64.b64decode(record["response"]["body"]["data"][0]["b64_json"]))) as im:
        text = im.info["parameters"]
    return int(text.split("Seed: ", 1)[1].split(",", 1)[0])


if __name__ == "__main__":
    raise SystemExit(main())
