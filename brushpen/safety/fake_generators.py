"""Train-or-reuse the fake generators for `brushpen.safety.fakes`, and sample from them.

Each function first brings its generator to the build's budget (StyleGAN kimg, diffusion or
autoencoder steps), resuming whatever an earlier or background run left in the models folder,
then records in `ctx["training"]` the equivalent CLI command, the state reached and the seconds
of training, which the build copies into the card. Only the real TRAIN patches ever train.
The sampled families return a `Sampler` (the sampling function and the generator's name) that
`fakes.build_sampled` draws the fakes from; this module knows nothing of the build itself.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from brushpen.gan.pipeline import StyleGANPipeline, to_uint8
from brushpen.gan.trainer import TrainConfig, Trainer
from brushpen.safety.fake_models import FakeModelConfig, ddim_sample, load_model, read_train_state, \
    train_fake_model

# `sample(n, batch_index)` -> n images, and the generator's name for the manifest
Sampler = tuple[Callable[[int, int], list[Image.Image]], str]


def _stylegan_command(cfg, folder: Path, size: int) -> str:
    channels = ",".join(map(str, cfg.stylegan_channels))
    return (f"brushpen gan train --data {shlex.quote(str(cfg.real / 'train'))} --out {shlex.quote(str(folder))} "
            f"--resolution {size} --kimg {cfg.stylegan_kimg:g} --batch {cfg.train_batch} --channels {channels} "
            f"--snap 2 --tick 0.5 --threads 1 --seed {cfg.seed} --mirror --resume")


def stylegan_sampler(cfg, size: int, ctx: dict) -> Sampler:
    """Train (resume) StyleGAN2 on the real train patches to `stylegan_kimg`; its sampler."""
    folder = cfg.models_dir() / "stylegan-photos"
    metrics = folder / "metrics.json"
    kimg = json.loads(metrics.read_text())["kimg"] if metrics.is_file() else 0.0
    if kimg < cfg.stylegan_kimg:
        Trainer(TrainConfig(data=cfg.real / "train", out=folder, resolution=size, kimg=cfg.stylegan_kimg,
                            batch=cfg.train_batch, channels=list(cfg.stylegan_channels), snapshot_kimg=2,
                            tick_kimg=0.5, seed=cfg.seed, mirror=True, resume=True, threads=cfg.threads)).run()
    m = json.loads(metrics.read_text())
    ctx["training"] = {"state": f"{m['kimg']:g} kimg", "seconds": m["train_seconds"],
                       "commands": [_stylegan_command(cfg, folder, size)], "params": m["params_G"]}
    pipe = StyleGANPipeline.from_pretrained(folder)

    def sample(n: int, batch_index: int) -> list[Image.Image]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + batch_index)
        with torch.no_grad():
            return pipe(num_images=n, generator=g, noise_mode="random")

    return sample, "stylegan2"


def _train(cfg, kind: str, steps: int, resolution: int | None = None) -> dict:
    folder = cfg.models_dir() / kind
    mcfg = FakeModelConfig(kind=kind, data=cfg.real / "train", out=folder, steps=steps, batch=cfg.train_batch,
                           resolution=resolution, seed=cfg.seed, threads=cfg.threads)
    command = (f"brushpen detect train-fake --kind {kind} --data {shlex.quote(str(mcfg.data))} "
               f"--out {shlex.quote(str(folder))} --steps {steps} --batch {cfg.train_batch}"
               + (f" --resolution {resolution}" if resolution else "") + f" --seed {cfg.seed} --threads 1")
    state = read_train_state(folder)
    if state.get("step", 0) < steps:
        state = train_fake_model(mcfg, command=command)
    state["command"] = command
    return state


def diffusion_sampler(cfg, size: int, ctx: dict) -> Sampler:
    """Train (resume) the small DDPM on the train patches; its sampler (DDIM, resized to `size`)."""
    res = min(cfg.diffusion_resolution, size)
    state = _train(cfg, "diffusion", cfg.diffusion_steps, res)
    prediction = state.get("prediction") or "epsilon"  # models trained before x0-prediction
    ctx["training"] = {"state": f"{state['step']} steps (batch {cfg.train_batch}, {res}x{res}, {prediction})",
                       "seconds": state["seconds"], "commands": [state["command"]], "params": state["params"],
                       "sampler": f"DDIM {cfg.ddim_steps} steps, eta 0, Lanczos {res}->{size}",
                       "prediction": prediction}
    unet = load_model(cfg.models_dir() / "diffusion")

    def sample(n: int, batch_index: int) -> list[Image.Image]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + batch_index)
        images = [Image.fromarray(a) for a in to_uint8(ddim_sample(unet, n, g, cfg.ddim_steps, prediction))]
        return [im.resize((size, size), Image.LANCZOS) if im.width != size else im for im in images]

    return sample, f"ddpm{res}-ddim{cfg.ddim_steps}"


def load_decoders(cfg, ctx: dict, optional: bool = False) -> None:
    """Put both trained autoencoders in `ctx` (training them first unless `optional`, where an
    untrained pair is simply left out, e.g. splices built from StyleGAN/diffusion regions only)."""
    states = []
    for kind in ("decoder-tconv", "decoder-upsample"):
        folder = cfg.models_dir() / kind
        if optional and read_train_state(folder).get("step", 0) < cfg.decoder_steps:
            return
        states.append(_train(cfg, kind, cfg.decoder_steps))
        ctx[f"ae-{kind.split('-')[1]}"] = load_model(folder)
    ctx["training"] = {"state": " + ".join(f"{s['kind']} {s['step']} steps" for s in states),
                       "seconds": round(sum(s["seconds"] for s in states), 1),
                       "commands": [s["command"] for s in states],
                       "params": sum(s["params"] for s in states)}
