"""`brushpen gan train` and `brushpen gan eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.config import apply_threads
from brushpen.errors import BrushpenError


def _channels(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


def register(sub: argparse._SubParsersAction) -> None:
    gan = sub.add_parser("gan", help="train and evaluate StyleGAN2 models").add_subparsers(dest="gan_cmd", required=True)

    # Defaults live in TrainConfig alone (one source of defaults): a flag left out is not passed.
    t = gan.add_parser("train", help="train a StyleGAN2 generator on a folder of images",
                       argument_default=argparse.SUPPRESS,
                       epilog="Flags left out take TrainConfig's defaults (brushpen/gan/train_config.py). "
                              "SIGINT or SIGTERM ends the run at a snapshot (exit 130).")
    t.add_argument("--data", type=Path, required=True, help="image folder (dataset.json or class sub-folders give labels)")
    t.add_argument("--out", type=Path, required=True, help="store folder to write, e.g. weights/gan/NAME")
    t.add_argument("--resolution", type=int)
    t.add_argument("--kimg", type=float, help="thousands of real images to show (default 100)")
    t.add_argument("--minutes", type=float, help="wall-clock budget: stop at a snapshot once spent, whatever --kimg says")
    t.add_argument("--batch", type=int, help="total batch (default 32)")
    t.add_argument("--channels", type=_channels, help="widths for 4x4..RxR, e.g. 256,192,96,48,24")
    t.add_argument("--z-dim", type=int)
    t.add_argument("--w-dim", type=int)
    t.add_argument("--map", dest="mapping_layers", type=int, help="mapping network depth")
    t.add_argument("--cond", action="store_true", help="condition on class labels")
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-g", type=float, help="G's own learning rate (default: --lr)")
    t.add_argument("--gamma", dest="r1_gamma", type=float,
                   help="R1 weight (default 0.0002*R^2/batch; pin it at a large batch)")
    t.add_argument("--pl-weight", type=float, help="path-length regularization weight (0 = off, 2 = paper)")
    t.add_argument("--style-mixing", type=float)
    t.add_argument("--ema-kimg", type=float, help="G_ema half-life (default batch*10/32)")
    t.add_argument("--augment", choices=["ada", "fixed", "none"])
    t.add_argument("--augment-p", type=float)
    t.add_argument("--ada-target", type=float)
    t.add_argument("--ada-kimg", type=float, help="kimg for ADA's p to go from 0 to 1")
    t.add_argument("--snap", dest="snapshot_kimg", type=float, help="kimg between snapshots (default 4)")
    t.add_argument("--snap-minutes", dest="snapshot_minutes", type=float, help="also snapshot every this many minutes")
    t.add_argument("--tick", dest="tick_kimg", type=float, help="kimg between progress lines (default 1)")
    t.add_argument("--stop-after-steps", type=int, help="end after this many steps of this run, without a snapshot")
    t.add_argument("--seed", type=int)
    t.add_argument("--mirror", action="store_true", help="random x-flips of the reals")
    t.add_argument("--max-images", type=int)
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint (OUT/checkpoint by default)")
    t.add_argument("--checkpoint-dir", type=Path, help="where resumable state goes (keep it under $BRUSHPEN_HOME)")
    t.add_argument("--threads", type=int)
    t.add_argument("--precision", choices=["fp32", "tf32", "bf16"], help="CUDA only; the CPU trains in fp32")
    t.add_argument("--channels-last", action="store_true", help="NHWC layout (CUDA)")
    t.add_argument("--compile", action="store_true", help="torch.compile G's synthesis and D's main pass")
    t.add_argument("--compact-checkpoint", action="store_true", help="Adam's second moments in bf16")
    t.set_defaults(func=run_train)

    e = gan.add_parser("eval", help="compute FID and/or KID of a model against its training images")
    e.add_argument("--model", required=True, help="store name (emoji64), family/name or a folder")
    e.add_argument("--metric", choices=["fid", "kid", "both"], default="fid",
                   help="both: FID and KID from one pass over the generated images")
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

    apply_threads(getattr(args, "threads", None))
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    result = Trainer(TrainConfig(**fields)).run()
    print(json.dumps(result))
    return 130 if result["stopped"] == "signal" else 0


def run_eval(args: argparse.Namespace) -> int:
    from brushpen.gan.metrics import evaluate_model

    apply_threads(args.threads)
    result = evaluate_model(args.model, metric=args.metric, num=args.num, data=args.data,
                            truncation_psi=args.truncation, batch=args.batch, seed=args.seed,
                            noise_mode=args.noise_mode)
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m brushpen.cli.gan_cmd gan train ...`: the gan commands alone, importing no other
    family, for a bare GPU machine that lacks the studio's stack (scripts/gpu/)."""
    parser = argparse.ArgumentParser(prog="brushpen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrushpenError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
