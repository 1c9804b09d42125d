"""`brushpen text pretrain`: train a small Llama-style causal LM from scratch on a text corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.config import apply_threads


def register(sub: argparse._SubParsersAction) -> None:
    text = sub.add_parser("text", help="pretrain text models").add_subparsers(dest="text_cmd", required=True)

    p = text.add_parser("pretrain", help="train a byte-level BPE tokenizer and a small causal LM on a corpus")
    p.add_argument("--corpus", type=Path, required=True,
                   help="a .txt file or a folder of them (train.txt + val.txt give the split)")
    p.add_argument("--out", type=Path, required=True, help="store folder to write, e.g. weights/text/NAME")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128, help="model width")
    p.add_argument("--block-size", type=int, default=128, help="context length in tokens")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay to lr/10)")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--eval-every", type=int, default=200, help="steps between validation, checkpoint and store refresh")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary, special tokens included")
    p.add_argument("--val-fraction", type=float, default=0.1, help="documents held out when the corpus has no val.txt")
    p.add_argument("--ngram-order", type=int, default=5, help="character n-gram baseline order (0 = skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from brushpen.text.pretrain import PretrainConfig, Pretrainer

    threads = apply_threads(args.threads)
    fields = {k: v for k, v in vars(args).items() if k in PretrainConfig.__dataclass_fields__}
    result = Pretrainer(PretrainConfig(**{**fields, "threads": threads})).run()
    print(json.dumps(result))
    return 0
