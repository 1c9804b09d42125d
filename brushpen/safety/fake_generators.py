"""Train-or-reuse the fake generators for `brushpen.safety.fakes`, and sample from them.

Each function first brings its generator to the build's budget (StyleGAN kimg, diffusion,
autoencoder, DCGAN, VAE or SR steps), resuming whatever an earlier or background run left in the
models folder, then records in `ctx["training"]` the equivalent CLI command, the state reached
and the seconds of training, which the build copies into the card. Only the real TRAIN patches
ever train; the emoji family's generator is the shipped store model, not trained here. What
each returns is what its family's builder consumes:
- a `Sampler` (stylegan, diffusion, dcgan, ddpm): the sampling function and the generator's
  name, for `fakes.build_sampled`;
- a `Remaker` (vae, sr-shuffle, sr-interp): real host patches in, fakes of them out, for
  `fake_families.build_remade`;
- a `Filler` (inpaint, emoji): per host a generated donor and the mask it is pasted through,
  for `fake_families.build_local`.
This module knows nothing of the build itself.
"""

from __future__ import annotations

import json
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from brushpen.gan.pipeline import StyleGANPipeline, to_uint8
from brushpen.gan.trainer import TrainConfig, Trainer
from brushpen.safety.fake_common import FakesConfig, seed_of
from brushpen.safety.fake_models import SR_SCALES, FakeModelConfig, ddim_sample, ddpm_sample, inpaint_ddim, \
    load_model, read_train_state, super_resolve, train_fake_model, vae_resample
from brushpen.safety.splice import border_colour, draw_mask_within, feather, foreground_mask
from brushpen.store import resolve_model

# `sample(n, batch_index)` -> n images, and the generator's name for the manifest
Sampler = tuple[Callable[[int, int], list[Image.Image]], str]


@dataclass(frozen=True)
class Remaker:
    """A generator of whole-patch fakes made from real patches. `name(i)`: the manifest generator
    of host i; `apply(images, indices, g)`: uint8 NCHW hosts (host numbers `indices`) -> [-1, 1]
    fakes of the same shape, drawing any randomness from `g`."""

    name: Callable[[int], str]
    apply: Callable[[torch.Tensor, list[int], torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Filler:
    """A generator of local fakes. `fill(hosts, rngs, g)`: per real host patch (with its own
    `random.Random`) a donor image of the patch's size and the mode-"L" mask to paste it through."""

    name: str
    fill: Callable[[list[Image.Image], list[random.Random], torch.Generator], list[tuple[Image.Image, Image.Image]]]


def _stylegan_command(cfg: FakesConfig, folder: Path, size: int) -> str:
    channels = ",".join(map(str, cfg.stylegan_channels))
    return (f"brushpen gan train --data {shlex.quote(str(cfg.real / 'train'))} --out {shlex.quote(str(folder))} "
            f"--resolution {size} --kimg {cfg.stylegan_kimg:g} --batch {cfg.train_batch} --channels {channels} "
            f"--snap 2 --tick 0.5 --threads 1 --seed {cfg.seed} --mirror --resume")


def stylegan_sampler(cfg: FakesConfig, size: int, ctx: dict) -> Sampler:
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


def _train(cfg: FakesConfig, kind: str, steps: int, resolution: int | None = None) -> dict:
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


def _training(state: dict, what: str, sampler: str) -> dict:
    """The card's record of one trained generator."""
    return {"state": f"{state['step']} steps ({what})", "seconds": state["seconds"],
            "commands": [state["command"]], "params": state["params"], "sampler": sampler}


def _diffusion_model(cfg: FakesConfig, size: int) -> tuple[torch.nn.Module, dict, int, str]:
    """The diffusion family's UNet (trained or resumed to `diffusion_steps`), its train state, the
    resolution asked of it and its prediction type."""
    res = min(cfg.diffusion_resolution, size)
    state = _train(cfg, "diffusion", cfg.diffusion_steps, res)
    prediction = state.get("prediction") or "epsilon"  # models trained before x0-prediction
    return load_model(cfg.models_dir() / "diffusion"), state, res, prediction


def _to_size(images: torch.Tensor, size: int) -> list[Image.Image]:
    """[-1, 1] NCHW -> PIL images, Lanczos-resized to `size` only where they differ."""
    out = [Image.fromarray(a) for a in to_uint8(images)]
    return [im.resize((size, size), Image.LANCZOS) if im.width != size else im for im in out]


def _resized(res: int, size: int) -> str:
    return f", Lanczos {res}->{size}" if res != size else ""


def diffusion_sampler(cfg: FakesConfig, size: int, ctx: dict) -> Sampler:
    """Train (resume) the small DDPM on the train patches; its sampler (DDIM, resized to `size`)."""
    unet, state, res, prediction = _diffusion_model(cfg, size)
    ctx["training"] = {**_training(state, f"batch {cfg.train_batch}, {res}x{res}, {prediction}",
                                   f"DDIM {cfg.ddim_steps} steps, eta 0{_resized(res, size)}"),
                       "prediction": prediction}

    def sample(n: int, batch_index: int) -> list[Image.Image]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + batch_index)
        return _to_size(ddim_sample(unet, n, g, cfg.ddim_steps, prediction), size)

    return sample, f"ddpm{res}-ddim{cfg.ddim_steps}"


def ddpm_sampler(cfg: FakesConfig, size: int, ctx: dict) -> Sampler:
    """The diffusion family's model under DDPM's ancestral sampler (`ddpm_steps` steps)."""
    unet, state, _, prediction = _diffusion_model(cfg, size)
    res = unet.config.sample_size
    ctx["training"] = {**_training(state, f"the diffusion family's model, {res}x{res}, {prediction}",
                                   f"DDPM ancestral {cfg.ddpm_steps} steps{_resized(res, size)}"),
                       "prediction": prediction}

    def sample(n: int, batch_index: int) -> list[Image.Image]:
        g = torch.Generator().manual_seed(seed_of(f"{cfg.seed}:ddpm:{batch_index}"))
        return _to_size(ddpm_sample(unet, n, g, cfg.ddpm_steps, prediction), size)

    return sample, f"ddpm{res}-ancestral{cfg.ddpm_steps}"


def dcgan_sampler(cfg: FakesConfig, size: int, ctx: dict) -> Sampler:
    """Train (resume) the DCGAN at the patch size; its sampler (z ~ N(0, I), BatchNorm in eval mode)."""
    state = _train(cfg, "dcgan", cfg.dcgan_steps, size)
    ctx["training"] = _training(state, f"batch {cfg.train_batch}, {size}x{size}, Adam 2e-4 (0.5, 0.999)",
                                "z ~ N(0, I), BatchNorm running statistics")
    G = load_model(cfg.models_dir() / "dcgan")

    def sample(n: int, batch_index: int) -> list[Image.Image]:
        g = torch.Generator().manual_seed(seed_of(f"{cfg.seed}:dcgan:{batch_index}"))
        with torch.no_grad():
            return _to_size(G(torch.randn(n, G.config.z_dim, generator=g)), size)

    return sample, "dcgan-tconv"


def remaker(cfg: FakesConfig, kind: str, ctx: dict) -> Remaker:
    """Train (resume) the VAE or an SR network on the train patches; how it remakes a host."""
    state = _train(cfg, kind, cfg.vae_steps if kind == "vae" else cfg.sr_steps)
    net = load_model(cfg.models_dir() / kind)
    if kind == "vae":
        ctx["training"] = _training(state, f"batch {cfg.train_batch}", "a latent drawn from the posterior, decoded")
        return Remaker(lambda i: "vae-bilinear", lambda x, idx, g: vae_resample(net, x, g))
    label = "sr-shuffle" if kind == "sr-shuffle" else f"sr-{net.config.mode}"
    ctx["training"] = _training(state, f"batch {cfg.train_batch}, scales x2 and x4 in one network",
                                "bicubic down by 2 or 4 (alternate hosts), then the network")

    def apply(x: torch.Tensor, idx: list[int], _g: torch.Generator) -> torch.Tensor:
        out = torch.empty(x.shape)
        for r in SR_SCALES:
            pick = [j for j, i in enumerate(idx) if _sr_scale(i) == r]
            if pick:
                out[pick] = super_resolve(net, x[pick], r)
        return out

    return Remaker(lambda i: f"{label}-x{_sr_scale(i)}", apply)


def _sr_scale(i: int) -> int:
    return SR_SCALES[i % len(SR_SCALES)]  # hosts alternate x2, x4


def inpaint_filler(cfg: FakesConfig, size: int, ctx: dict) -> Filler:
    """Feathered masks over `inpaint_area` of each host, the masked region filled by the diffusion
    model conditioned on the rest of the host (RePaint-style DDIM, `ddim_steps`)."""
    unet, state, _, prediction = _diffusion_model(cfg, size)
    res = unet.config.sample_size
    ctx["training"] = {**_training(state, f"the diffusion family's model, {res}x{res}, {prediction}",
                                   f"RePaint-style DDIM {cfg.ddim_steps} steps (known region re-noised each "
                                   f"step){_resized(res, size)}"), "prediction": prediction}

    def fill(hosts: list[Image.Image], rngs: list[random.Random], g: torch.Generator) -> list[tuple]:
        masks = [draw_mask_within(size, rng, cfg.inpaint_area)[0] for rng in rngs]
        known = torch.stack([_unit(h.resize((res, res), Image.BOX) if res != size else h) for h in hosts])
        hard = torch.stack([torch.from_numpy(np.asarray(m) > 0) for m in masks]).float()[:, None]
        keep = 1 - F.adaptive_max_pool2d(hard, res)  # a model pixel is generated if any pixel under it is masked
        donors = _to_size(inpaint_ddim(unet, known, keep, g, cfg.ddim_steps, prediction), size)
        return list(zip(donors, masks))

    return Filler("inpaint:ddim", fill)


def _unit(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1)


def emoji_filler(cfg: FakesConfig, size: int, ctx: dict) -> Filler:
    """Samples of the shipped emoji GAN, scaled to 25-70% of the patch side at a random place,
    pasted through their own foreground (feathered a little)."""
    folder = resolve_model(cfg.emoji_model, family="gan")
    pipe = StyleGANPipeline.from_pretrained(folder)
    m = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    ctx["training"] = {"state": f"the shipped store model {cfg.emoji_model} ({m.get('kimg', '?')} kimg, its "
                                "card.md); not trained here", "seconds": 0, "commands": [],
                       "params": m.get("params_G"), "sampler": "random class, noise off, 25-70% of the side"}

    def fill(hosts: list[Image.Image], rngs: list[random.Random], g: torch.Generator) -> list[tuple]:
        return [_paste_emoji(host, _emoji(pipe, g), rng) for host, rng in zip(hosts, rngs)]

    return Filler(f"emoji:{Path(folder).name}", fill)


def _emoji(pipe: StyleGANPipeline, g: torch.Generator, tries: int = 8) -> Image.Image:
    """One emoji sample; redrawn (a few times at most) while under a tenth of it is foreground."""
    for _ in range(tries):
        emoji = pipe(num_images=1, generator=g, noise_mode="none")[0]
        if foreground_mask(emoji, border_colour(emoji)).mean() >= 0.1:
            break
    return emoji


def _paste_emoji(host: Image.Image, emoji: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    size = host.width
    side = max(2, round(rng.uniform(0.25, 0.70) * size))
    x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
    small = emoji.resize((side, side), Image.LANCZOS)
    hard = np.zeros((size, size), bool)
    hard[y0:y0 + side, x0:x0 + side] = foreground_mask(small, border_colour(emoji))
    if not hard.any():  # nothing left of it at this size: the whole square is the fake region
        hard[y0:y0 + side, x0:x0 + side] = True
    donor = host.copy()
    donor.paste(small, (x0, y0))
    return donor, feather(hard, 0.7)


def load_decoders(cfg: FakesConfig, ctx: dict, optional: bool = False) -> None:
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
