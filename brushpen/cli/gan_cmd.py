"""`brushpen gan train` and `brushpen gan eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.config import apply_threads


def _channels(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


def register(sub: argparse._SubParsersAction) -> None:
    gan = sub.add_parser("gan", help="train and evaluate StyleGAN2 models").add_subparsers(dest="gan_cmd", required=True)

    t = gan.add_parser("train", help="train a StyleGAN2 generator on a folder of images")
    t.add_argument("--data", type=Path, required=True, help="image folder (dataset.json or class sub-folders give labels)")
    t.add_argument("--out", type=Path, required=True, help="store folder to write, e.g. weights/gan/NAME")
    t.add_argument("--resolution", type=int, default=64)
    t.add_argument("--kimg", type=float, default=100.0, help="thousands of real images to show")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--channels", type=_channels, default=None, help="widths for 4x4..RxR, e.g. 256,192,96,48,24")
    t.add_argument("--z-dim", type=int, default=256)
    t.add_argument("--w-dim", type=int, default=256)
    t.add_argument("--map", dest="mapping_layers", type=int, default=4, help="mapping network depth")
    t.add_argument("--cond", action="store_true", help="condition on class labels")
    t.add_argument("--lr", type=float, default=0.0025)
    t.add_argument("--gamma", dest="r1_gamma", type=float, default=None, help="R1 weight (default: 0.0002*R^2/batch)")
    t.add_argument("--pl-weight", type=float, default=0.0, help="path-length regularization weight (0 = off, 2 = paper)")
    t.add_argument("--style-mixing", type=float, default=0.5)
    t.add_argument("--ema-kimg", type=float, default=10.0)
    t.add_argument("--augment", choices=["ada", "fixed", "none"], default="ada")
    t.add_argument("--augment-p", type=float, default=0.0)
    t.add_argument("--ada-target", type=float, default=0.6)
    t.add_argument("--snap", dest="snapshot_kimg", type=float, default=4.0, help="kimg between snapshots")
    t.add_argument("--tick", dest="tick_kimg", type=float, default=1.0, help="kimg between progress lines")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--mirror", action="store_true", help="random x-flips of the reals")
    t.add_argument("--max-images", type=int, default=None)
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    t.add_argument("--checkpoint-dir", type=Path, default=None)
    t.add_argument("--threads", type=int, default=None)
    t.set_defaults(func=run_train)

    e = gan.add_parser("eval", help="compute FID or KID of a model against its training images")
    e.add_argument("--model", required=True, help="store name (emoji64), family/name or a folder")
    e.add_argument("--metric", choices=["fid", "kid"], default="fid")
    e.add_argument("--num", type=int, default=5000, help="generated images")
    e.add_argument("--data", type=Path, default=None, help="reference images (default: the emoji set)")
    e.add_argument("--truncation", type=float, default=1.0)
    e.add_argument("--batch", type=int, default=50)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--noise-mode", choices=["random", "const", "none"], default="random",
                   help="per-pixel noise of the generated images")
    e.add_argument("--threads", type=int, default=None)
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from brushpen.gan.trainer import TrainConfig, Trainer

    apply_threads(args.threads)
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    result = Trainer(TrainConfig(**fields)).run()
    print(json.dumps(result))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from brushpen.gan.metrics import evaluate_model

    apply_threads(args.threads)
    result = evaluate_model(args.model, metric=args.metric, num=args.num, data=args.data,
                            truncation_psi=args.truncation, batch=args.batch, seed=args.seed,
                            noise_mode=args.noise_mode)
    print(json.dumps(result, indent=2))
    return 0
