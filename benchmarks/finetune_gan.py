"""LoRA vs full fine-tuning vs from scratch: few-shot adaptation of emoji64 to Noto emoji.

    python benchmarks/finetune_gan.py --kimg 8 --num 118 --threads 1

1. The target set: `brushpen data noto --subcategory face- --count 150` (npm
   emoji-datasource-google@16.0.0: the 118 Noto faces, 64x64 on white, labelled by emoji group),
   built if missing. `--data ~/.cache/brushpen/data/noto64` runs the earlier mixed target
   (`brushpen data noto --count 150`, a seeded pick across all groups).
2. Three arms with the same kimg budget, batch, seed and data, one after the other:
   LoRA (rank 4, Freeze-D), full fine-tuning (Freeze-D), and training from scratch.
   The LoRA arm writes the adapter `weights/gan/emoji64/adapters/<--adapter-name>` (default noto-face).
3. FID and KID of each (and of the base before adaptation) against the target images (118 faces):
   `--num` generated images per model, seed 0, labels drawn from the target's class mix,
   truncation 1, per-pixel noise off (the serving default). The adapter is merged into a plain
   generator for this, the same path an ONNX export takes.
Prints a markdown table and writes the figures as JSON (`--json`). `--score-only N` trains nothing and
rescores the finished arms with sample seeds 0..N-1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brushpen.config import get_settings  # noqa: E402
from brushpen.gan.data import build_noto_dataset, load_image_folder, noto_folder_name  # noqa: E402
from brushpen.gan.finetune import GanFinetuneRequest, finetune  # noqa: E402
from brushpen.gan.lora import load_adapted_generator  # noqa: E402
from brushpen.gan.metrics import (frechet_distance, generated_images, inception_features,  # noqa: E402
                                  kernel_inception_distance, reference_features, stats)
from brushpen.store import read_metrics, resolve_model, update_metrics  # noqa: E402


def score(model_dir: Path, real: torch.Tensor, label_pool: torch.Tensor, num: int, seed: int = 0,
          G: torch.nn.Module | None = None) -> dict:
    """FID and KID of `num` images of the model (or of `G`, same z's and labels) against `real`."""
    run = None if G is None else (lambda z, labels: G(z, labels, truncation_psi=1.0, noise_mode="none"))
    fake = inception_features(generated_images(model_dir, num, 1.0, seed, label_pool, noise_mode="none", run=run),
                              desc=f"fakes {model_dir.name}")
    n = min(len(real), len(fake))
    return {"fid": round(frechet_distance(*stats(fake), *stats(real)), 2),
            "kid_x1000": round(kernel_inception_distance(fake, real, subsets=100, subset_size=n) * 1000, 2)}


def score_only(args: argparse.Namespace, base_dir: Path, work: Path, real: torch.Tensor,
               label_pool: torch.Tensor) -> int:
    """Each finished arm scored with seeds 0..N-1: the table's rows with their sampling noise."""
    adapter = base_dir / "adapters" / args.adapter_name
    models = {"base (no adaptation)": (base_dir, None)}
    if adapter.is_dir():
        models[f"LoRA ({args.adapter_name})"] = (base_dir, load_adapted_generator(base_dir, adapter).eval())
    for mode in ("full", "scratch"):
        if (work / mode / "config.json").exists():
            models[mode] = (work / mode, None)
    rows = {}
    for name, (folder, G) in models.items():
        runs = [score(folder, real, label_pool, args.num, seed=s, G=G) for s in range(args.score_only)]
        rows[name] = {k: {"mean": round(sum(r[k] for r in runs) / len(runs), 2), "min": min(r[k] for r in runs),
                          "max": max(r[k] for r in runs)} for k in ("fid", "kid_x1000")}
        print(json.dumps({name: rows[name]}), flush=True)
    print(f"\n| model | FID mean (min-max), {args.score_only} seeds | KID x1000 mean (min-max) |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['fid']['mean']} ({r['fid']['min']}-{r['fid']['max']}) | "
              f"{r['kid_x1000']['mean']} ({r['kid_x1000']['min']}-{r['kid_x1000']['max']}) |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kimg", type=float, default=2.0, help="training budget of each arm")
    ap.add_argument("--num", type=int, default=1000, help="generated images per FID")
    ap.add_argument("--base", default="emoji64")
    ap.add_argument("--data", type=Path, default=None,
                    help="default: $BRUSHPEN_HOME/data/noto-face64 (built if missing)")
    ap.add_argument("--count", type=int, default=150, help="target images when building the set")
    ap.add_argument("--subcategory", default="face-", help="subcategory filter when building the set")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--freeze-d", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--arms", default="lora,full,scratch")
    ap.add_argument("--adapter-name", default="noto-face")
    ap.add_argument("--work", type=Path, default=None, help="full/scratch models (default $BRUSHPEN_HOME/bench/finetune_gan)")
    ap.add_argument("--lr", type=float, default=GanFinetuneRequest.lr)
    ap.add_argument("--lr-g", type=float, default=GanFinetuneRequest.lr_g, help="G's lr (default: --lr)")
    ap.add_argument("--augment", choices=["ada", "fixed", "none"], default="ada")
    ap.add_argument("--augment-p", type=float, default=0.0, help="initial (ada) or constant (fixed) p")
    ap.add_argument("--ada-kimg", type=float, default=GanFinetuneRequest.ada_kimg)
    ap.add_argument("--ema-kimg", type=float, default=None)
    ap.add_argument("--ema-rampup", type=float, default=GanFinetuneRequest.ema_rampup, help="0 = off")
    ap.add_argument("--r1-gamma", type=float, default=None)
    ap.add_argument("--track-kimg", type=float, default=0.0,
                    help="also score G_ema every this many kimg during each arm (0 = only at the end)")
    ap.add_argument("--base-seeds", type=int, default=1, help="score the base with this many sample seeds")
    ap.add_argument("--score-only", type=int, default=0, metavar="SEEDS",
                    help="train nothing: score the base, the adapter and --work's full/scratch models with "
                         "this many sample seeds each (mean and range), the sampling noise of each row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    data = args.data or get_settings().data_dir / noto_folder_name(args.subcategory)
    if not (data / "dataset.json").exists():
        print(json.dumps(build_noto_dataset(data, args.count, subcategory=args.subcategory or None)))
    work = args.work or get_settings().home / "bench" / "finetune_gan"
    base_dir = resolve_model(args.base, family="gan")
    target = load_image_folder(data, 64, use_labels=True)
    real = reference_features(data, 64)
    if args.score_only:
        return score_only(args, base_dir, work, real, target.labels)
    rows = {"base (no adaptation)": {"mode": "base", "trainable_params": 0, **score(base_dir, real, target.labels,
                                                                                     args.num)}}
    if args.base_seeds > 1:   # the KID's sampling noise: the same model scored with other z's
        rows["base (no adaptation)"]["kid_x1000_by_seed"] = [rows["base (no adaptation)"]["kid_x1000"]] + [
            score(base_dir, real, target.labels, args.num, seed=s)["kid_x1000"] for s in range(1, args.base_seeds)]
    print(json.dumps(rows), flush=True)
    for mode in args.arms.split(","):
        out = args.adapter_name if mode == "lora" else str(work / mode)
        req = GanFinetuneRequest(base=args.base, data=data, out=out, mode=mode, rank=args.rank, kimg=args.kimg,
                                 freeze_d=args.freeze_d if mode != "scratch" else 0, batch=args.batch,
                                 threads=args.threads, lr=args.lr, lr_g=args.lr_g, augment=args.augment, augment_p=args.augment_p,
                                 ada_kimg=args.ada_kimg, ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup or None,
                                 r1_gamma=args.r1_gamma, snapshot_kimg=args.track_kimg or args.kimg)
        track: list[dict] = []

        def on_snapshot(tr) -> None:
            if args.track_kimg and tr.nimg < int(args.kimg * 1000):
                track.append({"kimg": tr.nimg / 1000, "augment_p": round(tr.ada.p, 3),
                              **score(base_dir, real, target.labels, args.num, G=tr.G_ema.eval())})
                print(json.dumps({mode: track[-1]}), flush=True)

        t0 = time.time()
        res = finetune(req, log=lambda m: print(m, flush=True), on_snapshot=on_snapshot)
        wall = time.time() - t0
        if mode == "lora":
            with tempfile.TemporaryDirectory() as tmp:   # merged into a plain generator, as for export
                load_adapted_generator(base_dir, res.path).save_pretrained(tmp)
                row = score(Path(tmp), real, target.labels, args.num)
            row["adapter_bytes"] = (res.path / "adapter.safetensors").stat().st_size
            update_metrics(res.path, fid_noto=row["fid"], kid_noto_x1000=row["kid_x1000"], fid_num=args.num,
                           fid_reference=f"{data.name} ({len(real)} images)")
        else:
            row = score(res.path, real, target.labels, args.num)
            row["model_bytes"] = sum(f.stat().st_size for f in res.path.glob("*.safetensors"))
        if track:
            row["track"] = track + [{"kimg": res.metrics["kimg"], "augment_p": round(res.metrics["augment_p"], 3),
                                     "fid": row["fid"], "kid_x1000": row["kid_x1000"]}]
        row.update(mode=mode, trainable_params=res.metrics["trainable_params_G"], kimg=res.metrics["kimg"],
                   sec_per_kimg=res.metrics.get("sec_per_kimg") or read_metrics(res.path).get("sec_per_kimg"), wall_s=round(wall, 1))
        rows[{"lora": f"LoRA rank {args.rank}", "full": "full fine-tuning", "scratch": "from scratch"}[mode]] = row
        print(json.dumps({mode: row}), flush=True)

    print(f"\n| arm | FID (target, {args.num} gen) | KID x1000 | trainable G params | size written | kimg | s/kimg |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        size = r.get("adapter_bytes") or r.get("model_bytes")
        print(f"| {name} | {r['fid']} | {r['kid_x1000']} | {r['trainable_params']:,} | "
              f"{f'{size:,} B' if size else '-'} | {r.get('kimg', '-')} | {r.get('sec_per_kimg', '-')} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
