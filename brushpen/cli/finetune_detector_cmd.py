"""`brushpen finetune detector`: train a LoRA adapter that teaches a detector a new generator.

    brushpen finetune detector --base detector --fake DIR --real DIR --out NAME [--rank 4] [--steps N]
        [--count N] [--families F,..] [--replay 0.5] [--resume] [--threads N]

`--fake`/`--real` are folders of images (or one .zip holding fake/ and real/ folders, given to
both). The adapter lands in `weights/safety/<base>/adapters/NAME/` and is used as `<base>:NAME`
(`brushpen detect --model detector:NAME`). Service: `brushpen.safety.lora_train.finetune`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brushpen.config import apply_threads


def register(group: argparse._SubParsersAction) -> None:
    from brushpen.safety.lora_train import DetectorFinetuneRequest

    d = DetectorFinetuneRequest()
    p = group.add_parser("detector", help="adapt the deepfake detector to a new generator from a few examples")
    p.add_argument("--base", default=d.base, help="detector to adapt (store name or folder; default: detector)")
    p.add_argument("--fake", type=Path, required=True, help="folder of AI-made images, or a zip with fake/ and real/")
    p.add_argument("--real", type=Path, required=True, help="folder of real images encoded like the fakes (or the zip)")
    p.add_argument("--out", required=True, help="the adapter's name")
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--alpha", type=float, default=d.alpha, help="LoRA alpha (scale alpha/rank; default: rank)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--count", type=int, default=d.count, help="use at most N training images per class")
    p.add_argument("--families", default="", help="fake families to use from a build-fakes manifest (comma list)")
    p.add_argument("--replay", type=float, default=d.replay,
                   help="share of each batch from the base's own training data, if on disk (0: none)")
    p.add_argument("--replay-count", type=int, default=d.replay_count)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same adapter")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from brushpen.safety.lora_train import DetectorFinetuneRequest, finetune

    apply_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()] or None
    req = DetectorFinetuneRequest(base=args.base, fake=args.fake, real=args.real, out=args.out, rank=args.rank,
                                  alpha=args.alpha, steps=args.steps, batch=args.batch, lr=args.lr, count=args.count,
                                  families=families, replay=args.replay, replay_count=args.replay_count,
                                  seed=args.seed, resume=args.resume)
    bar = tqdm(total=args.steps, desc="finetune detector", mininterval=0.5 if sys.stderr.isatty() else 30)

    def progress(ev) -> None:
        bar.update(ev.step - bar.n)
        bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)

    try:
        result = finetune(req, progress, log=lambda m: print(m, flush=True))
    finally:
        bar.close()
    print(json.dumps({"adapter": result.ref, "path": str(result.path),
                      **{k: v for k, v in result.metrics.items() if not isinstance(v, dict)}}))
    return 0
