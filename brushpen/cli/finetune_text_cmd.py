"""`brushpen finetune text`: train a brand-voice LoRA adapter for the copywriter (`brushpen.text.lora`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from brushpen.adapters import FinetuneEvent
from brushpen.families import default_model


def register(group: argparse._SubParsersAction) -> None:
    p = group.add_parser("text", help="brand voice: a LoRA adapter for the copywriter from brief -> copy examples")
    p.add_argument("--base", default=default_model("text"), help="the text model to adapt (default: the shipped base)")
    p.add_argument("--data", type=Path, required=True,
                   help='JSONL, one {"brief","kind","copy"} (optional tone, audience) or {"text"} per line')
    p.add_argument("--out", required=True, help="the adapter's name; use it as --adapter NAME or BASE:NAME")
    p.add_argument("--heldout", type=Path, default=None,
                   help="a held-out JSONL (default: hold out --heldout-fraction of --data)")
    p.add_argument("--heldout-fraction", type=float, default=0.1)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: 2 x rank)")
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--eval-every", type=int, default=50, help="held-out loss and a checkpoint every K steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from brushpen.text.lora import TextFinetuneRequest, finetune

    req = TextFinetuneRequest(
        base=args.base, data=args.data, out=args.out, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_steps=args.max_steps,
        heldout=args.heldout, heldout_fraction=args.heldout_fraction, eval_every=args.eval_every, seed=args.seed,
        resume=args.resume, threads=args.threads,
        command="brushpen finetune text " + " ".join(shlex.quote(a) for a in sys.argv[3:]))
    bar = None

    def progress(ev: FinetuneEvent) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=ev.total, initial=ev.step, desc=f"finetune {args.out}", unit="step", dynamic_ncols=True)
        bar.update(ev.step - bar.n)
        if ev.loss is not None:
            bar.set_postfix(loss=f"{ev.loss:.3f}")
        if "heldout_loss" in ev.metrics or ev.message.startswith("resumed"):
            bar.write(ev.message)

    result = finetune(req, progress)
    if bar is not None:
        bar.close()
    m = result.metrics
    print(json.dumps({"adapter": result.ref, "path": str(result.path),
                      **{k: m[k] for k in ("perplexity_before", "perplexity", "trainable_params", "adapter_bytes",
                                           "steps", "s_per_step")}}))
    print(f"try: brushpen copy 'YOUR BRIEF' --kind tagline --adapter {args.out}")
    return 0
