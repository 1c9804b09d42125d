"""`brushpen finetune gan`: adapt a shipped GAN to a folder or zip of your own images.

    brushpen finetune gan --base emoji64 --data DIR|FILE.zip --out NAME [--rank 4] [--kimg N] [--freeze-d K]
    brushpen finetune gan-merge emoji64:NAME --out MERGED      # a plain model folder, for ONNX export

The default `--mode lora` writes an adapter to `weights/gan/<base>/adapters/NAME/`, served as
`<base>:NAME`; `--mode full` and `--mode scratch` write an ordinary model folder (the baselines of
the experiment in BENCHMARKS.md). Calls `brushpen.gan.finetune.finetune`, as the API's jobs do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.config import apply_threads
from brushpen.families import default_model
from brushpen.store import store_root


def register(group: argparse._SubParsersAction) -> None:
    g = group.add_parser("gan", help="few-shot domain adaptation of a GAN (LoRA on the modulated convs)")
    g.add_argument("--base", default=default_model("gan"), help="the store GAN to adapt")
    g.add_argument("--data", type=Path, required=True, help="an image folder or a .zip of images")
    g.add_argument("--out", required=True, help="adapter name (lora), or model name/folder (full, scratch)")
    g.add_argument("--mode", choices=["lora", "full", "scratch"], default="lora",
                   help="lora: train an adapter; full: every weight; scratch: same net at random init")
    g.add_argument("--rank", type=int, default=4, help="LoRA rank")
    g.add_argument("--alpha", type=float, default=None, help="LoRA scale alpha/rank (default alpha = rank)")
    g.add_argument("--kimg", type=float, default=2.0, help="thousands of real images to show")
    g.add_argument("--freeze-d", type=int, default=0, help="freeze D's fromRGB and its first K blocks (Freeze-D)")
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--lr", type=float, default=0.0025, help="D's lr (and G's when --lr-g is not given)")
    g.add_argument("--lr-g", type=float, default=None, help="G's lr (default: --lr)")
    g.add_argument("--ada-kimg", type=float, default=2.0, help="ADA's p can go 0 -> 1 in this many kimg")
    g.add_argument("--augment", choices=["ada", "fixed", "none"], default="ada")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--snap", dest="snapshot_kimg", type=float, default=1.0, help="kimg between snapshots")
    g.add_argument("--resume", action="store_true", help="continue the run's checkpoint")
    g.add_argument("--threads", type=int, default=None)
    g.set_defaults(func=run)
    m = group.add_parser("gan-merge", help="merge a GAN adapter into a plain model folder (exports to ONNX)")
    m.add_argument("adapter", help="base:adapter, e.g. emoji64:noto-face")
    m.add_argument("--out", required=True, help="model name (weights/gan/NAME) or folder")
    m.set_defaults(func=run_merge)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from brushpen.gan.finetune import GanFinetuneRequest, finetune

    apply_threads(args.threads)
    req = GanFinetuneRequest(base=args.base, data=args.data, out=args.out, mode=args.mode, rank=args.rank,
                             alpha=args.alpha, kimg=args.kimg, freeze_d=args.freeze_d, batch=args.batch, lr=args.lr,
                             lr_g=args.lr_g, ada_kimg=args.ada_kimg,
                             augment=args.augment, seed=args.seed, snapshot_kimg=args.snapshot_kimg,
                             resume=args.resume, threads=args.threads)
    with tqdm(total=int(args.kimg * 1000), unit="img", desc=f"finetune {args.mode}") as bar:
        def progress(ev) -> None:
            bar.total = ev.total
            bar.update(ev.step - bar.n)
            bar.set_postfix_str(ev.message.split(", ", 1)[-1])

        result = finetune(req, progress, log=tqdm.write)
    print(json.dumps({"model": result.ref, "path": str(result.path), **result.metrics}, indent=2))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from brushpen.gan.lora import merge_to_model

    out = Path(args.out) if "/" in args.out else store_root() / "gan" / args.out
    path = merge_to_model(args.adapter, out)
    print(f"merged {args.adapter} -> {path}; export it with: brushpen export {args.out}")
    return 0
