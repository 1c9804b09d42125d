"""`brushpen federate simulate`: a federation on one machine for experiments and the studio. One
data set is split into sites (`federated.partition`); the server and every site then run as
separate processes over localhost, exactly as `federate server` and `federate site` do on separate
machines, each site reading only its own share. The data set's test split is the central
held-out set that scores the global model every round."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from brushpen.errors import BadInput
from brushpen.safety.detector_data import Sample
from brushpen.safety.federated import LocalConfig, partition, site_samples
from brushpen.safety.federated_flower import FederationConfig, state_dir
from brushpen.store import atomic_write_json


def _die_with_parent() -> None:
    """Linux: a federation's processes are killed when the process that started them dies (a
    studio killed mid-job leaves no server or site behind)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_samples(path: Path, samples: list[Sample]) -> Path:
    atomic_write_json(path, [{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
                             for s in samples])
    return path


def read_samples(path: Path) -> list[Sample]:
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Sample(Path(r["path"]), int(r["label"]), r["family"], r["split"],
                       Path(r["mask"]) if r.get("mask") else None, r.get("source")) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"{path} is not a site sample list: {e}") from e


def server_argv(cfg: FederationConfig, threads: int) -> list[str]:
    argv = ["federate", "server", "--out", cfg.out, "--host", cfg.host, "--port", str(cfg.port), "--rounds",
            str(cfg.rounds), "--local-steps", str(cfg.local_steps), "--strategy", cfg.strategy, "--min-sites",
            str(cfg.min_sites), "--expect-sites", str(cfg.expect_sites), "--proximal-mu", str(cfg.proximal_mu),
            *(["--server-lr", str(cfg.server_lr)] if cfg.server_lr is not None else []),
            "--server-momentum", str(cfg.server_momentum),
            "--max-update", str(cfg.max_update), "--dp-noise", str(cfg.dp_noise), "--dp-clip", str(cfg.dp_clip),
            "--dp-delta", str(cfg.dp_delta), "--round-timeout", str(cfg.round_timeout),
            "--average-last", str(cfg.average_last), "--seed", str(cfg.seed),
            "--threads", str(threads)]
    return argv + (["--central", str(cfg.central)] if cfg.central else []) + (["--resume"] if cfg.resume else [])


def site_argv(server: str, samples: Path, name: str, local: LocalConfig, threads: int) -> list[str]:
    return ["federate", "site", "--server", server, "--samples", str(samples), "--name", name, "--batch",
            str(local.batch), "--lr", str(local.lr), "--loc-weight", str(local.loc_weight), "--augment",
            local.augment, "--seed", str(local.seed), "--threads", str(threads)]


def central_share(samples: list[Sample], work: Path, fraction: float = 0.2) -> tuple[list[Sample], Path]:
    """Plain folders have no test split: a seeded fifth of the images becomes the central held-out
    set (a manifest under `work/central`, for `federated_flower.Central`); the rest go to the sites."""
    import hashlib

    rows, kept = [], []
    for s in samples:
        if int(hashlib.sha256(str(s.path).encode()).hexdigest(), 16) % 1000 < fraction * 1000:
            s = Sample(s.path, s.label, s.family, "test", s.mask, s.source)
        kept.append(s)
        if s.split in ("test", "val"):   # val calibrates the published model
            rows.append({"path": str(s.path), "label": s.label, "family": s.family, "split": s.split})
    folder = work / "central"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return kept, folder


def _report(state: Path, reported: int, on_round: Callable[[dict], None], final: bool = False) -> int:
    """Pass each newly finished round of the server's saved history to `on_round`; the rounds reported."""
    try:
        record = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return reported
    done = record["round"] if final else record["round"] - 1   # the last saved one may still gain site scores
    for entry in record["history"]:
        if reported < entry["round"] <= done:
            on_round(entry)
            reported = entry["round"]
    return reported


def simulate(data: Path, sites: int, how: str, cfg: FederationConfig, local: LocalConfig, threads: int = 1,
             log: Callable[[str], None] = print, on_round: Callable[[dict], None] | None = None) -> dict:
    """Split `data` into `sites`, run the federation as separate local processes, return its record.
    `on_round(entry)` sees each round's history entry as it finishes; raising from it stops the
    federation (every process is killed)."""
    cfg.check()
    work = state_dir(cfg.out) / "simulation"
    work.mkdir(parents=True, exist_ok=True)
    samples = site_samples(data)
    if cfg.central is None and (Path(data) / "manifest.jsonl").exists():
        cfg.central = Path(data)
    elif cfg.central is None:
        samples, cfg.central = central_share(samples, work)
    parts = partition(samples, sites, how, cfg.seed)
    cfg.host, cfg.port = "127.0.0.1", free_port()
    cfg.min_sites, cfg.expect_sites = min(cfg.min_sites, sites), sites   # every site in the first round
    python = [sys.executable, "-m", "brushpen.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        out = work / "server.log"
        procs.append(("server", subprocess.Popen(python + server_argv(cfg, threads), env=env, stdout=out.open("w"),
                                                 stderr=subprocess.STDOUT,
                                                 preexec_fn=_die_with_parent), out))
        for i, part in enumerate(parts):
            name = f"site{i + 1}"
            fams = sorted({s.family for s in part if s.label == 1})
            log(f"{name}: {sum(s.label == 0 for s in part)} real, {sum(s.label == 1 for s in part)} fake "
                f"({', '.join(fams)})")
            listing = write_samples(work / f"{name}.json", part)
            out = work / f"{name}.log"
            procs.append((name, subprocess.Popen(python + site_argv(f"127.0.0.1:{cfg.port}", listing, name, local,
                                                                    threads),
                                                 env=env, stdout=out.open("w"), stderr=subprocess.STDOUT,
                                                 preexec_fn=_die_with_parent), out))
        server, reported, state = procs[0][1], 0, state_dir(cfg.out) / "state.json"
        while server.poll() is None:
            time.sleep(0.5)
            for name, p, out in procs[1:]:
                if p.poll() not in (None, 0):
                    raise BadInput(f"{name} stopped ({p.returncode}): {_tail(out)}")
            if on_round is not None:
                reported = _report(state, reported, on_round)
        if server.returncode != 0:
            raise BadInput(f"the server stopped ({server.returncode}): {_tail(procs[0][2])}")
        if on_round is not None:
            _report(state, reported, on_round, final=True)
        for _, p, _ in procs[1:]:
            p.wait(timeout=60)
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    from brushpen.safety.detector_train import model_dir

    return json.loads((model_dir(cfg.out) / "federation.json").read_text(encoding="utf-8"))


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return "(no log)"
