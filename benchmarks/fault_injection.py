"""SIGKILL the server again and again while it runs a job: nothing is lost, nothing is done twice.

`--job batch` (the default) starts `brushpen studio --no-ui` on a private home (the shipped store, 1 torch thread), uploads a
batch of `--lines` image requests for emoji64 (`--n` images each, a seed on every other line, the
rest seeded by the batch), and then `--kills` times: waits until at least one more line is done,
waits a random 0-`--jitter` seconds more, and kills the server with SIGKILL, then starts it again on
the same home. After the last restart it waits for the batch to complete, and checks:
- the output file holds every custom_id exactly once, the error file none;
- no line ran more than kills + 1 times, and the lines run twice are at most one per kill;
- every output equals an uninterrupted run of its line (the same request, its seed, sent to the
  same server directly), pixel for pixel.

`--job finetune --family safety|gan|text` starts a fine-tuning job of the shipped base (copied into a
private store) with a checkpoint every few steps, kills the server `--kills` times while it trains
(each time after at least one more step, at a random moment), restarts it, and lets the job finish.
Then it runs the same job once more without a kill and checks:
- the killed job succeeded and resumed after every kill (a "resuming" event each time), from its
  last checkpoint (the first step reported after a restart follows that checkpoint);
- its adapter equals the uninterrupted job's, tensor for tensor, bit for bit.

Prints the counts and exits 1 when a check fails.

    .venv/bin/python benchmarks/fault_injection.py --lines 200 --kills 10
    .venv/bin/python benchmarks/fault_injection.py --job finetune --family safety --kills 10
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
import zipfile
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


def run_batch(args: argparse.Namespace) -> int:
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


# ---- a fine-tuning job --------------------------------------------------------------------------

# family -> (base model, its store folder, the job's hyperparameters: a checkpoint every few steps)
FINETUNES = {
    "safety": ("detector", "safety/detector",
               {"steps": 120, "batch": 16, "replay": 0.0, "rank": 4, "snap": 10, "seed": 3}),
    "gan": ("emoji64", "gan/emoji64",
            {"kimg": 0.48, "batch": 8, "rank": 4, "snapshot_kimg": 0.04, "seed": 3}),
    "text": ("smollm2-135m", "text/smollm2-135m",
             {"max_steps": 40, "batch_size": 4, "rank": 4, "eval_every": 4, "seed": 3}),
}


def training_file(family: str, count: int = 64) -> tuple[str, bytes]:
    """A small training upload built from the non-reserved data sets in the cache."""
    data = Path(os.environ.get("BRUSHPEN_HOME", Path.home() / ".cache" / "brushpen")) / "data"
    buf = io.BytesIO()
    if family == "text":
        briefs = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "briefs.json").read_text())
        rows = []
        for i in range(count):
            b = briefs[i % len(briefs)]
            brief = b["brief"] if isinstance(b, dict) else str(b)
            rows.append({"brief": brief, "kind": "tagline", "copy": f"{brief.split(',')[0].strip()[:60]}, made simple."})
        return "copy.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
    photos = sorted((data / "photos" / "train").glob("*.png"))
    faces = sorted((data / "noto-face64").glob("*.png"))
    if family == "gan" and not faces:
        raise SystemExit(f"build the data first: brushpen data noto --subcategory face- --count 150 "
                         f"--out {data / 'noto-face64'}")
    with zipfile.ZipFile(buf, "w") as zf:
        if family == "gan":
            for p in faces[:count]:
                zf.writestr(f"faces/{p.name}", p.read_bytes())
        else:   # real photo patches, and the same patches through a soft 4x upscaler as the fakes
            step = max(1, len(photos) // count)
            # without `brushpen data photos`, smooth random colour fields with grain stand in
            rng = np.random.default_rng(0)
            reals = ([Path(p) for p in photos[::step][:count]] if photos else
                     [Image.fromarray(np.clip(np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8))
                                                         .resize((64, 64), Image.BICUBIC), np.float32)
                                              + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8))
                      for _ in range(count)])
            for i, src in enumerate(reals):
                if isinstance(src, Path):
                    with Image.open(src) as im:
                        real = im.convert("RGB").resize((64, 64), Image.LANCZOS)
                else:
                    real = src
                fake = real.resize((16, 16), Image.BILINEAR).resize((64, 64), Image.BICUBIC)
                for folder, img in (("real", real), ("fake", fake)):
                    out = io.BytesIO()
                    img.save(out, "PNG")
                    zf.writestr(f"{folder}/{i:03d}.png", out.getvalue())
    return "data.zip", buf.getvalue()


def job_steps(db: Path, job_id: str) -> list[tuple[str, int | None]]:
    """(message, step) of every event of a job, oldest first."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT message, data FROM ft_events WHERE job_id=? ORDER BY seq", (job_id,)).fetchall()
    except sqlite3.OperationalError:   # no events table yet
        rows = []
    finally:
        con.close()
    return [(m, json.loads(d).get("step") if d else None) for m, d in rows]


def last_step(db: Path, job_id: str) -> int:
    return max((s for _, s in job_steps(db, job_id) if s is not None), default=0)


def wait_job(studio: Studio, job_id: str, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while (job := httpx.get(f"{studio.url}/v1/fine_tuning/jobs/{job_id}", timeout=30).json())["status"] \
            not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not finish")
        time.sleep(0.5)
    return job


def adapter_tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    return out


def run_finetune(args: argparse.Namespace) -> int:
    import shutil

    rng = random.Random(args.seed)
    base, folder, hyper = FINETUNES[args.family]
    root = Path(tempfile.mkdtemp(prefix="brushpen-ft-faults-"))
    home, store = root / "home", root / "weights"
    home.mkdir()
    repo_store = Path(__file__).resolve().parents[1] / "weights"
    # A private store: the base only (no adapters, edge graphs or checkpoints), so nothing is written
    # into the checkout.
    shutil.copytree(repo_store / folder, store / folder, ignore=shutil.ignore_patterns("adapters", "edge", "checkpoint"))
    if args.family == "text":   # the text base's derived fp32 copy lives under $BRUSHPEN_HOME: share it
        cache = Path(os.environ.get("BRUSHPEN_HOME", Path.home() / ".cache" / "brushpen")) / "models"
        if cache.is_dir():
            (home / "models").symlink_to(cache)
    os.environ["BRUSHPEN_WEIGHTS"] = str(store)
    db = home / "jobs" / "jobs.sqlite3"
    studio = Studio(home, args.threads)
    starts = [studio.start()]
    name, data = training_file(args.family)
    up = httpx.post(studio.url + "/v1/files", data={"purpose": "fine-tune"}, files={"file": (name, data)},
                    timeout=120).json()

    def create(suffix: str) -> str:
        r = httpx.post(studio.url + "/v1/fine_tuning/jobs", timeout=60,
                       json={"model": base, "training_file": up["id"], "suffix": suffix, "hyperparameters": hyper})
        if r.status_code != 200:
            raise SystemExit(f"the job was refused: {r.status_code} {r.text}")
        return r.json()["id"]

    job = create("killed")
    at_kill, first_after = [], []
    t0 = time.monotonic()
    for k in range(args.kills):
        before = last_step(db, job)
        deadline = time.monotonic() + 600
        while last_step(db, job) <= before:
            if time.monotonic() > deadline:
                raise SystemExit(f"no progress before kill {k + 1}")
            time.sleep(0.05)
        time.sleep(rng.uniform(0, args.jitter))
        studio.kill()
        at_kill.append(last_step(db, job))
        state = httpx_status_from_db(db, job)
        print(f"kill {k + 1}: last step reported {at_kill[-1]} (job {state})", flush=True)
        if state in ("completed", "failed"):
            print("the job finished before this kill: give it more steps")
            break
        starts.append(studio.start())
        n = len(job_steps(db, job))
        while len(events := job_steps(db, job)) == n or all(s is None for _, s in events[n:]):
            if httpx_status_from_db(db, job) in ("completed", "failed"):
                break
            time.sleep(0.05)
        first_after.append(next((s for _, s in job_steps(db, job)[n:] if s is not None), None))
    killed = wait_job(studio, job)
    killed_s = time.monotonic() - t0
    t1 = time.monotonic()
    clean = wait_job(studio, create("uninterrupted"))
    clean_s = time.monotonic() - t1
    studio.stop()
    events = job_steps(db, job)
    resumes = sum(m.startswith("resuming") for m, _ in events)
    attempts = max(a for *_, a in line_rows(db, job)) if line_rows(db, job) else 0
    a = adapter_tensors(store / folder / "adapters" / "killed")
    b = adapter_tensors(store / folder / "adapters" / "uninterrupted")
    differ = sorted(k for k in a.keys() & b.keys() if not np.array_equal(a[k], b[k]))
    max_diff = max((float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in differ), default=0.0)
    kills = len(at_kill)
    rerun = [s - f + 1 for s, f in zip(at_kill, first_after) if f is not None]
    checks = {
        "both jobs succeeded": killed["status"] == clean["status"] == "succeeded",
        "a resume after every kill": resumes == kills,
        "the same tensors": bool(a) and a.keys() == b.keys(),
        "every tensor bit for bit equal": bool(a) and not differ,
    }
    print(f"\n| family | hyperparameters | kills | step at each kill | first step after each restart "
          f"| resumes | attempts | tensors | tensors unequal | max abs diff | killed run | uninterrupted run "
          f"| median restart |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.family} | {json.dumps(hyper)} | {kills} | {', '.join(map(str, at_kill))} "
          f"| {', '.join(map(str, first_after))} | {resumes} | {attempts} | {len(a)} | {len(differ)} | {max_diff:.3g} "
          f"| {killed_s:.0f} s | {clean_s:.0f} s | {sorted(starts)[len(starts) // 2]:.1f} s |")
    if rerun:
        print(f"steps run again after a kill: median {sorted(rerun)[len(rerun) // 2]}, max {max(rerun)}")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


def httpx_status_from_db(db: Path, job_id: str) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT status FROM batches WHERE id=?", (job_id,)).fetchone()[0]
    finally:
        con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", choices=("batch", "finetune"), default="batch")
    ap.add_argument("--family", choices=sorted(FINETUNES), default="safety", help="the fine-tune's family")
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--n", type=int, default=4, help="images per line")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--jitter", type=float, default=2.0, help="random extra seconds before each kill")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    return run_batch(args) if args.job == "batch" else run_finetune(args)


if __name__ == "__main__":
    raise SystemExit(main())
