"""Pretraining from scratch on Debian fortunes: validation loss and bits/char against steps, side by
side with character n-gram baselines on the same held-out split.

What it measures: `brushpen.text.pretrain` trains a small Llama-style LM (default 4 layers, 4 heads,
dim 128, context 128, byte-level BPE vocab 512, batch 16) for a fixed number of steps on the
whitelisted Debian `fortunes` corpus (`brushpen data fortunes`, built here when missing). Every
`--eval-every` steps it scores the whole validation split: loss in nats per token, perplexity,
and bits per character = total nats / (characters + one end per document) / ln 2. The baselines
(add-one character unigram, interpolated Kneser-Ney character n-grams of `--orders`) are fit on
the training split and scored on the same documents with the same denominator, so the bits/char
columns compare directly. Threads are pinned (`--threads`, default 1) and reported, with training
tokens/s, model GFLOP/s (6 FLOPs per weight per token plus attention, nanoGPT's estimate) and
% of a square fp32 matmul's GFLOP/s measured in the same run (the higher of a reading before
and after training).

Reference point: nanoGPT's CPU recipe on Shakespeare characters (4 layers, 4 heads, dim 128,
context 64, 2000 iterations) reaches a validation loss of about 1.88 nats per character, that is
about 2.71 bits per character, in about 3 minutes on a laptop CPU. That is a different corpus and
a character vocabulary, so it anchors the order of magnitude, not the exact figure.

    .venv/bin/python benchmarks/text_pretrain.py --threads 1 --steps 600 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from brushpen.config import get_settings  # noqa: E402
from brushpen.text.corpus import build_fortunes, load_corpus  # noqa: E402
from brushpen.text.ngram import CharNGram, CharUnigram  # noqa: E402
from brushpen.text.pretrain import PretrainConfig, Pretrainer  # noqa: E402

NANOGPT_ANCHOR = ("anchor, not measured here: nanoGPT Shakespeare-char on CPU, val loss ~1.88 nats/char "
                  "(~2.71 bits/char) in ~3 min")


def gemm_peak_gflops(n: int = 1024, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        a @ b
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/fortunes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--orders", default="3,5,7", help="character n-gram orders for the baselines")
    ap.add_argument("--out", type=Path, default=None, help="model folder (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    corpus_dir = args.corpus or get_settings().data_dir / "fortunes"
    if not (corpus_dir / "train.txt").exists():
        print(f"building the fortunes corpus in {corpus_dir}", flush=True)
        build_fortunes(corpus_dir)
    corpus = load_corpus(corpus_dir)
    print(f"corpus: {corpus_dir}  {len(corpus.train)} train / {len(corpus.val)} val documents, "
          f"{corpus.val_chars} val characters; source {corpus.source.get('packages', '?')}")
    peak_before = gemm_peak_gflops()
    print(f"threads: {torch.get_num_threads()}  fp32 matmul peak: {peak_before:.1f} GFLOP/s")

    baselines = {}
    t0 = time.time()
    baselines["char unigram (add-one)"] = CharUnigram().fit(corpus.train).bits_per_char(corpus.val)
    for order in (int(o) for o in args.orders.split(",") if o):
        baselines[f"char {order}-gram (interp. Kneser-Ney)"] = CharNGram(order).fit(corpus.train).bits_per_char(corpus.val)
    print(f"baselines fit and scored in {time.time() - t0:.1f} s")

    out = args.out or Path(tempfile.mkdtemp(prefix="brushpen-pretrain-bench-")) / "fortunes-lm"
    cfg = PretrainConfig(corpus=corpus_dir, out=out, layers=args.layers, heads=args.heads, dim=args.dim,
                         block_size=args.block_size, steps=args.steps, batch=args.batch, lr=args.lr,
                         warmup=min(100, args.steps // 10), eval_every=args.eval_every,
                         vocab_size=args.vocab_size, ngram_order=0, threads=args.threads)
    t0 = time.time()
    trainer = Pretrainer(cfg, corpus=corpus, progress=False, log=lambda msg: None)
    trainer.run()
    wall = time.time() - t0
    # The higher of two readings: on a shared machine a low one means another process took the core.
    peak = max(peak_before, gemm_peak_gflops())
    m = trainer.metrics()

    print(f"\nLM: {m['params'] / 1e6:.2f} M parameters, {cfg.layers} layers, {cfg.heads} heads, dim {cfg.dim}, "
          f"context {cfg.block_size}, batch {cfg.batch}, vocab {len(trainer.tok)}, lr {cfg.lr}; "
          f"{wall:.0f} s wall in all (training {m['train_seconds']:.0f} s)")
    print(f"{'step':>6} {'train s':>8} {'train loss':>10} {'val loss':>9} {'val ppl':>8} {'val bpc':>8}")
    for h in m["history"]:
        print(f"{h['step']:>6} {h['train_seconds']:>8.1f} {h['train_loss']:>10.4f} {h['val_loss']:>9.4f} "
              f"{h['perplexity']:>8.2f} {h['val_bpc']:>8.4f}")
    print(f"\n{'model on the same validation split':<40} {'bits/char':>9}")
    for name, bpc in baselines.items():
        print(f"{name:<40} {bpc:>9.4f}")
    label = f"LM after {m['step']} steps"
    print(f"{label:<40} {m['val_bpc']:>9.4f}")
    pct = 100 * m["train_gflops"] / peak
    print(f"\ntraining: {m['tokens_per_s']:.0f} tokens/s = {m['train_gflops']:.1f} GFLOP/s "
          f"= {pct:.0f}% of the {peak:.1f} GFLOP/s matmul peak on {torch.get_num_threads()} thread(s)")
    print(NANOGPT_ANCHOR)
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "baselines_bpc": baselines,
                                         "lm": m, "peak_gflops": peak,
                                         "wall_seconds": wall}, indent=2))


if __name__ == "__main__":
    main()
