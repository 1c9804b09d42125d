"""Back on the CPU: turn what a GPU run returned into a run folder, a store model, and (once it
measures better) the shipped model.

    python scripts/gpu/collect.py FILES_AT [--run emoji64-gpu]
        FILES_AT/checkpoint/* and stats.jsonl -> $BRUSHPEN_HOME/runs/RUN/{checkpoint,stats.jsonl},
        and a store model (G_ema, samples.png, metrics.json) -> $BRUSHPEN_HOME/runs/RUN/model.
        Resume it on the CPU with `gan train --checkpoint-dir $BRUSHPEN_HOME/runs/RUN/checkpoint
        --resume` (the CUDA random stream is reseeded; Adam's bf16 moments come back as fp32).
    python scripts/gpu/collect.py --promote $BRUSHPEN_HOME/runs/RUN [--to weights/gan/emoji64]
        Copies the model files and the checkpoint's G, G_ema, D and state.json into the store
        folder (never the optimizer or the random state). Keeps the card: edit it by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from brushpen.config import get_settings
from brushpen.gan.networks import StyleGANGenerator
from brushpen.gan.snapshot import write_store_model
from brushpen.gan.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "samples.png")


def collect(files_at: Path, run: Path, like: Path) -> None:
    ckpt = run / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    shutil.copytree(files_at / "checkpoint", ckpt)
    if (files_at / "stats.jsonl").exists():
        shutil.copyfile(files_at / "stats.jsonl", run / "stats.jsonl")
    state = json.loads((ckpt / "state.json").read_text())["scalars"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in state["config"].items() if k in names})
    G = StyleGANGenerator.from_config(StyleGANGenerator.load_config(like))
    G.load_state_dict(load_file(str(ckpt / "G_ema.safetensors")))
    with torch.no_grad():
        write_store_model(G.eval(), run / "model", cfg, state["nimg"], state["train_seconds"],
                          json.loads((like / "metrics.json").read_text())["num_train_images"], state["ada"]["p"])
    print(f"{run}: kimg {state['nimg'] / 1000:.3f}, step {state['step']}, augment p {state['ada']['p']:.3f}, "
          f"{state['train_seconds'] / 60:.1f} min of training in all")
    print(f"next: brushpen gan eval --model {run / 'model'} --num 5000 --noise-mode none --threads 2")


def promote(run: Path, to: Path) -> None:
    for name in MODEL_FILES:
        shutil.copyfile(run / "model" / name, to / name)
    (to / "checkpoint").mkdir(exist_ok=True)
    for name in ("G.safetensors", "G_ema.safetensors", "D.safetensors", "state.json"):
        shutil.copyfile(run / "checkpoint" / name, to / "checkpoint" / name)
    print(f"promoted {run} into {to}: update metrics.json (FID), card.md, then redo the edge graphs, "
          f"the student and the adapters (scripts/gpu/README.md)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files_at", type=Path, nargs="?", help="the folder the device tool's files lie in")
    ap.add_argument("--run", default="emoji64-gpu", help="run name under $BRUSHPEN_HOME/runs/")
    ap.add_argument("--like", type=Path, default=REPO / "weights" / "gan" / "emoji64",
                    help="a store model with the same architecture (its config.json)")
    ap.add_argument("--promote", type=Path, default=None, help="a run folder to copy into the store")
    ap.add_argument("--to", type=Path, default=REPO / "weights" / "gan" / "emoji64")
    args = ap.parse_args()
    if args.promote:
        promote(args.promote, args.to)
    elif args.files_at:
        collect(args.files_at, get_settings().home / "runs" / args.run, args.like)
    else:
        ap.error("give FILES_AT or --promote RUN")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
