"""What a training snapshot writes into the store: the servable G_ema, samples.png, metrics.json, card.md.

Shared by `gan train` (a full model) and `finetune gan` (full and scratch modes); the LoRA mode
writes an adapter instead (gan/lora.py). Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch

from brushpen.gan.networks import StyleGANGenerator
from brushpen.gan.pipeline import StyleGANPipeline, image_grid
from brushpen.gan.train_config import TrainConfig
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text, staging_dir

SAMPLE_SEEDS = list(range(64))  # the fixed seeds of every samples.png grid


def sample_grid(G: StyleGANGenerator, seeds: list[int] = SAMPLE_SEEDS, psi: float = 1.0,
                classes: list[int] | None = None):
    """An 8-column grid, one image per seed. `classes` (a conditional G's labels, e.g. those a
    fine-tuning set uses) are cycled through; without them each seed draws its own label."""
    pipe = StyleGANPipeline(G)
    images = [pipe(1, torch.Generator().manual_seed(s), truncation_psi=psi, noise_mode="none",
                   label=classes[i % len(classes)] if classes and G.num_classes else None)[0]
              for i, s in enumerate(seeds)]
    return image_grid(images, cols=8)


def write_store_model(G: StyleGANGenerator, out: Path, cfg: "TrainConfig", nimg: int,
                      train_seconds: float, num_images: int, augment_p: float,
                      sample_classes: list[int] | None = None) -> None:
    """Write the servable model files into the store folder, each one atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for junk in out.glob(".*.tmp"):  # temp files of a write that a kill interrupted
        junk.unlink(missing_ok=True)
    tmp = staging_dir(out / "model")
    G.save_pretrained(tmp)
    for f in tmp.iterdir():  # weights first, config last: config.json marks a model
        if f.name != "config.json":
            atomic_write_bytes(out / f.name, f.read_bytes())
    atomic_write_bytes(out / "config.json", (tmp / "config.json").read_bytes())
    shutil.rmtree(tmp)
    buf = io.BytesIO()
    sample_grid(G, classes=sample_classes).save(buf, format="PNG")
    atomic_write_bytes(out / "samples.png", buf.getvalue())
    params = sum(p.numel() for p in G.parameters())
    old = {}
    if (out / "metrics.json").exists():
        old = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    metrics = {k: v for k, v in old.items() if k.startswith(("fid", "kid")) and old.get("kimg") == nimg / 1000}
    metrics.update({"kimg": round(nimg / 1000, 3), "train_seconds": round(train_seconds, 1),
                    "sec_per_kimg": round(train_seconds / max(nimg / 1000, 1e-9), 1),
                    "params_G": params, "augment_p": round(augment_p, 4), "num_train_images": num_images})
    atomic_write_json(out / "metrics.json", metrics)
    card = out / "card.md"
    if not card.exists():
        atomic_write_text(card, default_card(out.name, cfg, metrics))


def default_card(name: str, cfg: "TrainConfig", metrics: dict) -> str:
    """A starting card; edit it with the data source and licence of your own run."""
    flags = f"--data {cfg.data} --out {cfg.out} --resolution {cfg.resolution} --kimg {cfg.kimg} --batch {cfg.batch}"
    if cfg.cond:
        flags += " --cond"
    return (f"# {name}\n\nA StyleGAN2-style generator trained with brushpen.\n\n"
            f"- Data: `{cfg.data}`\n- Command: `brushpen gan train {flags}`\n"
            f"- Metrics at write time: `{json.dumps(metrics, sort_keys=True)}` (see metrics.json for the latest)\n"
            f"- Licence: that of the training data.\n")
