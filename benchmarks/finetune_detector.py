"""LoRA fine-tuning of the detector (BENCHMARKS.md, "LoRA fine-tuning: detector"), two experiments:

    .venv/bin/python benchmarks/finetune_detector.py lofo [--family decoder] [--counts 10,50,200]
        [--seeds 0,1] [--replays 0.5,0] [--steps 200] [--lofo-steps 2000]
        [--base-families F,..] [--threads 1]
    .venv/bin/python benchmarks/finetune_detector.py shipped [--count 200] [--steps 200] [--threads 1]

`lofo`: a base trained without one family (`brushpen detect train ... --exclude FAMILY`, kept in
runs/, never shipped), then one adapter per (count, seed, replay): `count` training fakes of the
held-out family and as many training reals (a draw seeded by `seed`). Reported on the TEST split
(disjoint by source photo): the held-out family's fakes against all test reals, and the original
families' fakes against all test reals (pooled, and the worst per-family change), before and after.

`shipped`: the adapter shipped with the detector, `detector:upsample`: the shipped `detector` taught
the same unseen family from `count` examples per class, replay of its own data on; test AUC per
family, base against adapter, written into the adapter's card.
Results: `runs/lora-bench/*.json` and printed markdown.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from brushpen.config import apply_threads, get_settings  # noqa: E402
from brushpen.safety import lora  # noqa: E402
from brushpen.safety.calibrate import roc_auc  # noqa: E402
from brushpen.safety.detector import load_detector  # noqa: E402
from brushpen.safety.detector_data import gather, load_arrays  # noqa: E402
from brushpen.safety.detector_train import TrainConfig, logits_of, train_detector  # noqa: E402
from brushpen.safety.lora_train import DetectorFinetuneRequest, finetune  # noqa: E402

WORK = Path(__file__).resolve().parent.parent / "runs" / "lora-bench"


def make_upsample_family(photos: Path, out: Path, counts: dict[str, int]) -> Path:
    """A generator family that needs no training, built in seconds: real photo patches down-sampled
    2x (bicubic) and up-sampled back (bilinear), the trace of an interpolating decoder with the
    content of real photos; re-encoded like the real copy (`fakes.write_encoded`). Layout
    `out/upsample/<split>/*.png` (family `upsample`)."""
    from PIL import Image

    from brushpen.safety.fakes import write_encoded

    rng = np.random.default_rng(0)
    for split, n in counts.items():
        files = sorted((photos / split).glob("*.png"))
        for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False)):
            rel = f"upsample/{split}/{files[i].name}"
            if not (out / rel).exists():
                with Image.open(files[i]) as im:
                    small = im.convert("RGB").resize((im.width // 2, im.height // 2), Image.BICUBIC)
                write_encoded(out, rel, small.resize(im.size, Image.BILINEAR), seed=0)
    return out


def test_set(data: Path, extra: list[Path] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    test = [s for s in gather([data / "real"], [data, *extra]) if s.split == "test"]
    images, _ = load_arrays(test)
    return images, np.array([s.label for s in test]), np.array([s.family for s in test])


def aucs(logits: np.ndarray, labels: np.ndarray, fams: np.ndarray) -> dict[str, float]:
    """AUC of each family's test fakes against all test reals."""
    out = {}
    for fam in sorted(set(fams[labels == 1])):
        keep = (labels == 0) | (fams == fam)
        out[fam] = roc_auc(logits[keep], labels[keep])
    return out


def pooled(logits: np.ndarray, labels: np.ndarray, fams: np.ndarray, families: list[str]) -> float:
    keep = (labels == 0) | np.isin(fams, families)
    return roc_auc(logits[keep], labels[keep])


def run_lofo(args: argparse.Namespace) -> None:
    data, family = args.data, args.family
    extra = []
    if family == "upsample":
        extra = [make_upsample_family(get_settings().home / "data" / "photos", WORK / "upsample-data",
                                      {"train": 600, "val": 200, "test": 243})]
    base = args.base or WORK / f"no-{family}"
    pick = f"--families {','.join(args.base_families)}" if args.base_families else f"--exclude {family}"
    cmd = (f"brushpen detect train --real {data / 'real'} --fake {data} {pick} "
           f"--steps {args.lofo_steps} --out {base} --threads {args.threads}")
    if not (base / "config.json").exists():
        print(f"training the base without {family}: {cmd}", flush=True)
        train_detector(TrainConfig(out=base, real=[data / "real"], fake=[data], exclude=(family,),
                                   families=tuple(args.base_families) if args.base_families else None,
                                   steps=args.lofo_steps, resume=True, progress=False), command=cmd)
    images, labels, fams = test_set(data, extra)
    trained = json.loads((base / "train.json").read_text())
    old, cmd = trained["families"], trained["command"] or cmd   # what the base was trained on, and how
    if family in old:
        raise SystemExit(f"the base {base} was trained on {family}: pick a base without it")
    before = logits_of(load_detector(base), images)
    result = {"family": family, "base_command": cmd, "base_sha256": lora.base_sha256(base),
              "threads": args.threads, "steps": args.steps,
              "before": {"new": aucs(before, labels, fams)[family], "old": pooled(before, labels, fams, old),
                         "per_family": aucs(before, labels, fams)}, "runs": []}
    done = WORK / f"lofo-{family}.json"
    if done.exists():   # runs of an earlier invocation on the same base weights and budget are kept, not redone
        prev = json.loads(done.read_text())   # (the weights, not the command: the data behind a command can change)
        if prev.get("base_sha256") == result["base_sha256"] and prev["steps"] == args.steps:
            result["runs"] = prev["runs"]
    for seed in args.seeds:   # seed-major: a stopped run still leaves every count and replay setting once
        for replay in args.replays:
            for count in args.counts:
                name = f"{family}-n{count}-s{seed}-r{replay:g}"
                if any((r["count"], r["seed"], r["replay"]) == (count, seed, replay) for r in result["runs"]):
                    continue
                req = DetectorFinetuneRequest(base=str(base), fake=extra[0] if extra else data, real=data / "real",
                                              out=name,
                                              families=[family], count=count, seed=seed, replay=replay,
                                              steps=args.steps, rank=args.rank)
                t0 = time.time()
                res = finetune(req)
                after = logits_of(lora.load_adapted(base, res.path), images)
                per = aucs(after, labels, fams)
                row = {"count": count, "seed": seed, "replay": replay, "new": per[family],
                       "old": pooled(after, labels, fams, old), "per_family": per, "command": lora_cmd(req),
                       "seconds": round(time.time() - t0, 1), "train_seconds": res.metrics["train_seconds_this_run"],
                       "trainable_params": res.metrics["trainable_params"]}
                row["worst_old_change"] = min(per[f] - result["before"]["per_family"][f] for f in old)
                result["runs"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "per_family"}), flush=True)
                save(result, f"lofo-{family}.json")
    print(lofo_table(result))


def lora_cmd(req: DetectorFinetuneRequest) -> str:
    from brushpen.safety.lora_train import command_of

    return command_of(req)


def lofo_table(result: dict) -> str:
    b = result["before"]
    lines = [f"| examples per class | replay | seeds | {result['family']} AUC before | after | "
             "original families AUC before | after | worst per-family change | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["count"], r["replay"]) for r in result["runs"]}, key=lambda k: (k[0], -k[1]))
    for count, replay in keys:
        rs = [r for r in result["runs"] if r["count"] == count and r["replay"] == replay]
        fmt = lambda v: f"{np.mean(v):.4f}" + (f" ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else "")
        lines.append(f"| {count} | {replay:g} | {len(rs)} | {b['new']:.4f} | {fmt([r['new'] for r in rs])} | "
                     f"{b['old']:.4f} | {fmt([r['old'] for r in rs])} | "
                     f"{min(r['worst_old_change'] for r in rs):+.4f} | {np.median([r['train_seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def save(obj: dict, name: str) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / name).write_text(json.dumps(obj, indent=2))


def run_shipped(args: argparse.Namespace) -> None:
    """The shipped adapter: the shipped detector taught the `upsample` family from `count` examples."""
    from brushpen.store import atomic_write_text, resolve_model, update_metrics

    data, family = args.data, "upsample"
    extra = make_upsample_family(get_settings().home / "data" / "photos", WORK / "upsample-data",
                                 {"train": 600, "val": 200, "test": 243})
    base_dir = resolve_model("detector", family="safety")
    images, labels, fams = test_set(data, [extra])
    old = [f for f in json.loads((base_dir / "train.json").read_text())["families"] if f in set(fams)]
    before = logits_of(load_detector(base_dir), images)
    req = DetectorFinetuneRequest(base="detector", fake=extra, real=data / "real", out=family, families=[family],
                                  count=args.count, steps=args.steps, rank=args.rank, seed=0)
    res = finetune(req, log=lambda m: print(m, flush=True))
    after = logits_of(lora.load_adapted(base_dir, res.path), images)
    pb, pa = aucs(before, labels, fams), aucs(after, labels, fams)
    rows = [{"family": f, "base": pb[f], "adapter": pa[f], "n_fake": int((fams == f).sum())} for f in sorted(pb)]
    rows.append({"family": "original families pooled (" + ",".join(old) + ")", "base": pooled(before, labels, fams, old),
                 "adapter": pooled(after, labels, fams, old), "n_fake": int(np.isin(fams, old).sum())})
    table = "\n".join(["| test fakes | base AUC | adapter AUC | change | fakes | reals |", "|---|---|---|---|---|---|"] +
                      [f"| {r['family']} | {r['base']:.4f} | {r['adapter']:.4f} | {r['adapter'] - r['base']:+.4f} | "
                       f"{r['n_fake']} | {int((labels == 0).sum())} |" for r in rows])
    eval_cmd = "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    update_metrics(res.path, test_auc=rows, eval_command=eval_cmd)
    card = (res.path / "card.md").read_text()
    card += (f"\n## Test split, base against adapter\n\n    {eval_cmd}\n\nThe `upsample` family: real photo patches "
             "down-sampled 2x (bicubic) and up-sampled back (bilinear), re-encoded like the real copy "
             "(`benchmarks/finetune_detector.py make_upsample_family`); the base never saw it. Each family's test "
             f"fakes against all test reals (disjoint by source photo), AUC of the image logit.\n\n{table}\n")
    atomic_write_text(res.path / "card.md", card)
    save({"rows": rows, "metrics": res.metrics, "command": lora_cmd(req), "eval_command": eval_cmd},
         f"shipped-{family}.json")
    print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("lofo", "shipped"))
    p.add_argument("--data", type=Path, default=get_settings().home / "data" / "fakes")
    p.add_argument("--family", default="decoder")
    p.add_argument("--counts", type=lambda t: [int(v) for v in t.split(",")], default=[10, 50, 200])
    p.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1])
    p.add_argument("--replays", type=lambda t: [float(v) for v in t.split(",")], default=[0.5, 0.0])
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lofo-steps", type=int, default=2000)
    p.add_argument("--base", type=Path, default=None,
                   help="an existing base without --family (default: runs/lora-bench/no-FAMILY, trained if absent)")
    p.add_argument("--base-families", type=lambda t: [v for v in t.split(",") if v], default=[],
                   help="the LOFO base's families (default: every family but --family)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    apply_threads(args.threads)
    (run_lofo if args.experiment == "lofo" else run_shipped)(args)


if __name__ == "__main__":
    main()
