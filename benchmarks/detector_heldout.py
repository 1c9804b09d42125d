"""What moves the detector's held-out numbers: the same LOFO (and optionally LOSO) protocol run for
several training recipes side by side, on the same held-out families, one row per recipe.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detector_heldout.py \\
        --fake ~/.cache/brushpen/data/fakes --steps 500 \\
        --variant "old families, basic aug:stylegan,diffusion,decoder,splice:basic" \\
        --variant "all families, basic aug::basic" \\
        --variant "all families, chain aug::chain" \\
        --variant "wider CNN::chain:32,48,48,96,96" [--loso] [--threads 1]

A variant is `NAME:FAMILIES:AUGMENT[:WIDTHS]` (FAMILIES empty = every family in the set). Every
variant is scored on every family of the set held out: a family the variant never trains on is
held out already, so one model trained on the variant's families answers for all of them; a family
it does train on gets its own model trained without it (`brushpen.safety.detector_heldout`).
`--shipped DIR` adds a first row that trains nothing: a detector as it is (e.g. the shipped one,
trained on an earlier fake set), every family of this set scored as held out.
`--unseen-real DIR` adds a column no model trained near: real patches from photo sources that are not
in the fake set's real side at all (a `data photos` folder, re-encoded here the way build-fakes encodes
its reals), scored by the variant's model trained on all its families against every test fake.
Models and results go to $BRUSHPEN_HOME/bench/detector-heldout/<variant>/ (resumable: a finished
model is reused), the table to stdout and `--json`. One CPU thread by default (`--threads`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from brushpen.config import get_settings  # noqa: E402
from brushpen.safety.detector import DetectorConfig, load_detector  # noqa: E402
from brushpen.safety.detector_data import gather  # noqa: E402
from brushpen.safety.detector_heldout import (SETTINGS, ImageCache, held_out_names, score_held_out,  # noqa: E402
                                              score_unseen, scoring_set, summarise, train_held_out, unseen_reals)
from brushpen.safety.detector_train import TrainConfig, train_detector  # noqa: E402


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"--variant takes NAME:FAMILIES:AUGMENT[:WIDTHS], not {text!r}")
    name, fams, augment = parts[:3]
    widths = tuple(int(w) for w in parts[3].split(",")) if len(parts) == 4 and parts[3] else None
    return {"name": name, "families": tuple(f for f in fams.split(",") if f) or None, "augment": augment,
            "widths": widths}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_variant(v: dict, args: argparse.Namespace, families: list[str], cache: ImageCache, samples) -> dict:
    folder = get_settings().home / "bench" / "detector-heldout" / slug(v["name"])
    model = DetectorConfig(widths=v["widths"]) if v["widths"] else DetectorConfig()
    base = TrainConfig(out=folder / "all", fake=args.fake, real=args.real, families=v["families"], steps=args.steps,
                       augment=v["augment"], model=model, progress=False)
    trained_on = set(v["families"] or families)
    start = time.time()
    inside = [f for f in families if f in trained_on]
    train_held_out(folder, base, "family", names=inside, log=print)
    if (set(families) - trained_on or args.unseen_real) and not (folder / "all" / "train.json").exists():
        train_detector(replace(base, resume=True), command=f"bench variant {v['name']}", log=print)
    rows = []
    for fam in families:
        m = load_detector(folder / (f"family-{fam}" if fam in trained_on else "all"))
        rows.append({"protocol": "LOFO", "held_out": fam, "steps": args.steps,
                     **score_held_out(m, scoring_set(samples, "family", fam), cache)})
    if args.loso:
        sources = held_out_names(samples, "source")
        train_held_out(folder, base, "source", names=sources, log=print)
        for src in sources:
            m = load_detector(folder / f"source-{src}")
            rows.append({"protocol": "LOSO", "held_out": src, "steps": args.steps,
                         **score_held_out(m, scoring_set(samples, "source", src), cache)})
    if args.unseen_real:
        m = load_detector(folder / "all")
        test = unseen_reals(args.unseen_real) + [s for s in samples if s.split == "test" and s.label == 1]
        rows.append({"protocol": "unseen sources", "held_out": "all", "steps": args.steps,
                     **score_held_out(m, test, cache)})
    return {"variant": v, "rows": rows, "summary": summarise(rows), "seconds": round(time.time() - start, 1),
            "params": m.num_params()}


def score_as_is(folder: Path, args: argparse.Namespace, cache: ImageCache, samples) -> dict:
    """A trained detector scored on every family and on the unseen sources, training nothing."""
    m = load_detector(folder)
    rows = [dict(r, protocol="LOFO") if r["protocol"] == "unseen set" else r
            for r in score_unseen(m, samples, args.unseen_real, cache)]
    return {"variant": {"name": f"as is: {folder}"}, "rows": rows, "summary": summarise(rows), "seconds": 0,
            "params": m.num_params()}


def table(results: list[dict], families: list[str]) -> str:
    head = ("| recipe | params | LOFO mean AUC clean | LOFO mean AUC JPEG 75 | worst family (clean) | "
            + " | ".join(families) + " | LOSO mean AUC clean | unseen sources AUC / FPR@t_fake |")
    lines = [head, "|---" * (7 + len(families)) + "|"]
    for r in results:
        s = r["summary"]["LOFO"]
        per = {row["held_out"]: row["clean"]["auc"] for row in r["rows"] if row["protocol"] == "LOFO"}
        loso = r["summary"].get("LOSO", {}).get("clean", {}).get("mean_auc")
        loso = "-" if loso is None else f"{loso:.4f}"
        unseen = next((row["clean"] for row in r["rows"] if row["protocol"] == "unseen sources"), None)
        unseen = "-" if unseen is None else f"{unseen['auc']:.4f} / {unseen['fpr_at_t_fake']:.4f}"
        lines.append(f"| {r['variant']['name']} | {r['params']:,} | {s['clean']['mean_auc']:.4f} | "
                     f"{s['jpeg75']['mean_auc']:.4f} | {s['clean']['worst']} {s['clean']['min_auc']:.4f} | "
                     + " | ".join(f"{per[f]:.3f}" for f in families) + f" | {loso} | {unseen} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fake", type=Path, action="append", required=True)
    p.add_argument("--real", type=Path, action="append", default=[])
    p.add_argument("--variant", action="append", default=[], help="NAME:FAMILIES:AUGMENT[:WIDTHS]")
    p.add_argument("--shipped", type=Path, default=None, help="a trained detector folder to score as it is first")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--loso", action="store_true", help="also leave each photo source out")
    p.add_argument("--unseen-real", type=Path, default=None,
                   help="a `data photos` folder of sources the fake set does not use (scored, never trained on)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    samples = gather(args.real, args.fake)
    families = held_out_names(samples, "family")
    cache = ImageCache(DetectorConfig().tile)
    results = []
    jobs = [lambda: score_as_is(args.shipped, args, cache, samples)] if args.shipped else []
    jobs += [lambda text=text: run_variant(parse_variant(text), args, families, cache, samples)
             for text in args.variant]
    for job in jobs:
        results.append(job())
        print(table(results, families), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "settings": SETTINGS,
                                             "results": results}, indent=1))
    print(f"\n{len(families)} held-out families, {args.steps} steps per model, {args.threads} thread(s); "
          f"mean over families of each held-out model's AUC on that family's test fakes vs all test reals.")
    seconds = [r["seconds"] for r in results]
    print(f"held-out families: {', '.join(families)}; seconds per recipe: {', '.join(map(str, seconds))}")


if __name__ == "__main__":
    main()
