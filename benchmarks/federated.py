"""Federated training of the checker (BENCHMARKS.md, "Federated training"): centralised against each
site alone against federated, on the checker's fake set split into sites, one thread per process.

    .venv/bin/python benchmarks/federated.py [--data ~/.cache/brushpen/data/fakes] [--sites 4]
        [--partitions iid,by-family,by-source] [--rounds 20] [--local-steps 50] [--dp 0.3,1.0]
        [--central-steps N] [--arms centralised,alone,federated] [--strategy fedavg|fedprox|fedavgm|fedadam|fedyogi]
        [--proximal-mu MU] [--server-lr ETA] [--server-momentum M] [--average-last K] [--seed S] [--json out.json]

For each partition (`brushpen federate simulate --partition P`):
- **centralised**: one detector on every site's training images pooled;
- **site alone**: one detector per site on its own images;
- **federated**: `federate simulate` (`--strategy`, FedAvg by default), each site and the server
  their own process.
Every arm runs the same local training (`federated.Site`: balanced, augmented batches, AdamW at a
constant lr) for rounds x local-steps steps (the centralised one for `--central-steps`, e.g. sites x
that, the federation's total compute), and is scored on the same held-out set, the data's TEST
split (which no site trains on): AUC overall and per fake family. Also: the rounds the federation
took to come within 0.01 of its final central AUC, bytes each site sent per round, wall time; and
with `--dp`, the by-family federation again under central DP at each noise multiplier, with epsilon.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from brushpen.config import apply_threads, get_settings  # noqa: E402
from brushpen.safety.calibrate import roc_auc  # noqa: E402
from brushpen.safety.detector_data import load_arrays  # noqa: E402
from brushpen.safety.detector_train import logits_of  # noqa: E402
from brushpen.safety.federated import LocalConfig, Site, get_weights, partition, site_samples  # noqa: E402


def scorer(samples) -> callable:
    test = [s for s in samples if s.split == "test"]
    images, _ = load_arrays(test)
    labels = np.array([s.label for s in test])
    fams = np.array([s.family for s in test])

    def score(model) -> dict[str, float]:
        logits = logits_of(model, images)
        out = {"all": roc_auc(logits, labels)}
        for fam in sorted(set(fams[labels == 1])):
            keep = (labels == 0) | (fams == fam)
            out[fam] = roc_auc(logits[keep], labels[keep])
        return out

    return score


def alone(samples, steps: int, local: LocalConfig, name: str) -> tuple[Site, float]:
    import torch

    from brushpen.safety.detector import Detector

    torch.manual_seed(local.seed)
    start = get_weights(Detector(local.model))
    t0 = time.monotonic()
    site = Site(samples, local, name=name)
    site.fit(start, steps)
    return site, time.monotonic() - t0


def federate(data: Path, sites: int, how: str, args: argparse.Namespace, out: str, dp: float = 0.0) -> dict:
    from brushpen.safety.federated_flower import FederationConfig
    from brushpen.safety.federated_sim import simulate

    cfg = FederationConfig(out=out, rounds=args.rounds, local_steps=args.local_steps, min_sites=sites,
                           dp_noise=dp, dp_clip=args.dp_clip, strategy=args.strategy, proximal_mu=args.proximal_mu,
                           server_lr=args.server_lr, server_momentum=args.server_momentum,
                           average_last=args.average_last, seed=args.seed)
    t0 = time.monotonic()
    record = simulate(data, sites, how, cfg, LocalConfig(seed=args.seed), threads=1,
                      log=lambda m: print(m, flush=True))
    record["wall_s"] = round(time.monotonic() - t0, 1)
    return record


def summary(record: dict) -> dict:
    history = [h for h in record["history"] if h["round"] > 0]
    curve = [h["central"]["auc"] for h in history]
    final = curve[-1]
    converged = next(i + 1 for i, a in enumerate(curve) if abs(a - final) <= 0.01)
    sent = [s["bytes_up"] for h in history for s in h["sites"].values()]
    return {"curve": [round(a, 4) for a in curve], "rounds_to_converge": converged,
            "bytes_per_site_round": int(statistics.median(sent)), "wall_s": record["wall_s"],
            "epsilon": record["privacy"]["epsilon"]}


def run(args: argparse.Namespace) -> dict:
    data = args.data
    work = Path(tempfile.mkdtemp(prefix="fed-bench-"))
    os.environ["BRUSHPEN_WEIGHTS"], os.environ["BRUSHPEN_HOME"] = str(work / "weights"), str(work / "home")
    samples = site_samples(data)
    score = scorer(samples)
    steps = args.rounds * args.local_steps
    local = LocalConfig(seed=args.seed)   # the centralised and site-alone arms' seed too
    out: dict = {"sites": args.sites, "rounds": args.rounds, "local_steps": args.local_steps, "steps": steps,
                 "threads": 1, "partitions": {}}
    for how in args.partitions.split(","):
        parts = partition(samples, args.sites, how, 0)
        row: dict = {"sites": []}
        arms = args.arms.split(",")
        if "centralised" in arms:
            pooled = [s for p in parts for s in p]
            site, secs = alone(pooled, args.central_steps or steps, local, "all")
            row["centralised"] = {"auc": score(site.model), "seconds": round(secs, 1),
                                  "steps": args.central_steps or steps}
            print(how, "centralised", row["centralised"], flush=True)
        for i, part in enumerate(parts if "alone" in arms else []):
            site, secs = alone(part, steps, local, f"site{i + 1}")
            seen = sorted({s.family for s in part if s.label == 1})
            row["sites"].append({"name": f"site{i + 1}", "families": seen, "auc": score(site.model),
                                 "seconds": round(secs, 1)})
            print(how, row["sites"][-1], flush=True)
        from brushpen.safety.detector import load_detector
        from brushpen.safety.detector_train import model_dir

        if "federated" in arms:
            record = federate(data, args.sites, how, args, f"fed-{how}")
            row["federated"] = {"auc": score(load_detector(model_dir(f"fed-{how}"))), **summary(record)}
            print(how, "federated", row["federated"], flush=True)
        out["partitions"][how] = row
    if args.dp:
        out["dp"] = {}
        for noise in (float(x) for x in args.dp.split(",")):
            from brushpen.safety.detector import load_detector
            from brushpen.safety.detector_train import model_dir

            name = f"fed-dp{noise:g}"
            record = federate(data, args.sites, "by-family", args, name, dp=noise)
            out["dp"][f"{noise:g}"] = {"auc": score(load_detector(model_dir(name))), "clip": args.dp_clip,
                                       **summary(record)}
            print("dp", noise, out["dp"][f"{noise:g}"], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(r: dict) -> str:
    lines = []
    for how, row in r["partitions"].items():
        first = row.get("centralised") or row.get("federated") or row["sites"][0]
        fams = [k for k in first["auc"] if k != "all"]
        lines += [f"**{how}** ({r['sites']} sites, {r['rounds']} rounds x {r['local_steps']} steps)", "",
                  "| arm | families trained on | AUC all | " + " | ".join(fams) + " | unseen families, mean |",
                  "|---|---|---|" + "---|" * (len(fams) + 1)]

        def line(name: str, seen: list[str], auc: dict, unseen: list[str]) -> str:
            mean = statistics.mean(auc[f] for f in unseen) if unseen else None
            return (f"| {name} | {', '.join(seen) if len(seen) < len(fams) else 'all'} | {auc['all']:.4f} | "
                    + " | ".join(f"{auc[f]:.4f}" for f in fams) + f" | {'-' if mean is None else f'{mean:.4f}'} |")

        if "centralised" in row:
            lines.append(line(f"centralised ({row['centralised'].get('steps', r['steps'])} steps)", fams,
                              row["centralised"]["auc"], []))
        for s in row["sites"]:
            unseen = [f for f in fams if f not in s["families"]]
            lines.append(line(s["name"] + " alone", s["families"], s["auc"], unseen))
            if unseen and "federated" in row:   # the goal: federated beats each site alone on what it never saw
                lines.append(line(f"federated, on {s['name']}'s unseen", fams, row["federated"]["auc"], unseen))
        if "federated" in row:
            f = row["federated"]
            lines += [line("federated", fams, f["auc"], []), "",
                      f"Federated: within 0.01 of its final AUC after {f['rounds_to_converge']} rounds; "
                      f"{f['bytes_per_site_round'] / 1e3:.0f} kB sent per site per round (as much received); "
                      f"{f['wall_s']:.0f} s wall."]
        lines.append("")
    for noise, d in (r.get("dp") or {}).items():
        lines.append(f"DP noise {noise} (clip {d['clip']}): AUC {d['auc']['all']:.4f}, epsilon {d['epsilon']:.2f} "
                     f"(delta 1e-5)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=get_settings().data_dir / "fakes")
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--partitions", default="iid,by-family,by-source")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--local-steps", type=int, default=50)
    ap.add_argument("--dp", default="", help="noise multipliers for the DP runs (by-family), e.g. 0.3,1.0")
    ap.add_argument("--dp-clip", type=float, default=1.0)
    ap.add_argument("--central-steps", type=int, default=0,
                    help="the centralised arm's steps (0: rounds x local steps)")
    ap.add_argument("--arms", default="centralised,alone,federated")
    ap.add_argument("--strategy", default="fedavg",
                    help="the federation's strategy: fedavg, fedprox, fedavgm, fedadam, fedyogi")
    ap.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx's pull towards the global weights")
    ap.add_argument("--server-lr", type=float, default=None,
                    help="FedAvgM/FedAdam/FedYogi's server step (default: 1 for FedAvgM, 0.01 for the others)")
    ap.add_argument("--server-momentum", type=float, default=0.9, help="FedAvgM's server momentum")
    ap.add_argument("--average-last", type=int, default=1, help="publish the mean of the last K global models")
    ap.add_argument("--seed", type=int, default=0, help="the federation's seed (server and sites)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    apply_threads(1)
    result = run(args)
    print(json.dumps(result, indent=1, default=str))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
