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
            "--server-lr", str(cfg.server_lr),
            "--max-update", str(cfg.max_update), "--dp-noise", str(cfg.dp_noise), "--dp-clip", str(cfg.dp_clip),
            "--dp-delta", str(cfg.dp_delta), "--round-timeout", str(cfg.round_timeout), "--seed", str(cfg.seed),
            "--threads", str(threads)]
    return argv + (["--central", str(cfg.central)] if cfg.central else []) + (["--resume"] if cfg.resume else [])


def site_argv(server: str, samples: Path, name: str, local: LocalConfig, threads: int) -> list[str]:
    return ["federate", "site", "--server", server, "--samples", str(samples), "--name", name, "--batch",
            str(local.batch), "--lr", str(local.lr), "--loc-weight", str(local.loc_weight), "--augment",
            local.augment, "--seed", str(local.seed), "--threads", str(threads)]


def simulate(data: Path, sites: int, how: str, cfg: FederationConfig, local: LocalConfig, threads: int = 1,
             log: Callable[[str], None] = print) -> dict:
    """Split `data` into `sites`, run the federation as separate local processes, return its record."""
    cfg.check()
    parts = partition(site_samples(data), sites, how, cfg.seed)
    work = state_dir(cfg.out) / "simulation"
    work.mkdir(parents=True, exist_ok=True)
    cfg.host, cfg.port = "127.0.0.1", free_port()
    if cfg.central is None and (Path(data) / "manifest.jsonl").exists():
        cfg.central = Path(data)
    cfg.min_sites, cfg.expect_sites = min(cfg.min_sites, sites), sites   # every site in the first round
    python = [sys.executable, "-m", "brushpen.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        out = work / "server.log"
        procs.append(("server", subprocess.Popen(python + server_argv(cfg, threads), env=env, stdout=out.open("w"),
                                                 stderr=subprocess.STDOUT), out))
        for i, part in enumerate(parts):
            name = f"site{i + 1}"
            fams = sorted({s.family for s in part if s.label == 1})
            log(f"{name}: {sum(s.label == 0 for s in part)} real, {sum(s.label == 1 for s in part)} fake "
                f"({', '.join(fams)})")
            listing = write_samples(work / f"{name}.json", part)
            out = work / f"{name}.log"
            procs.append((name, subprocess.Popen(python + site_argv(f"127.0.0.1:{cfg.port}", listing, name, local,
                                                                    threads),
                                                 env=env, stdout=out.open("w"), stderr=subprocess.STDOUT), out))
        server = procs[0][1]
        while server.poll() is None:
            time.sleep(0.5)
            for name, p, out in procs[1:]:
                if p.poll() not in (None, 0):
                    raise BadInput(f"{name} stopped ({p.returncode}): {_tail(out)}")
        if server.returncode != 0:
            raise BadInput(f"the server stopped ({server.returncode}): {_tail(procs[0][2])}")
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
