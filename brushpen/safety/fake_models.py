"""The small generators behind the detector's fake families, other than StyleGAN (which is
`brushpen.gan`): a pixel-space DDPM (`diffusers.UNet2DModel`, sampled with DDIM, with DDPM's
ancestral sampler, or RePaint-style to inpaint a masked region), two convolutional autoencoders
whose decoders up-sample in the two ways generators do, a transposed convolution and a
nearest-neighbour up-sample followed by a convolution (AutoGAN-style artefact simulation: the
real content passes through, the decoder's fingerprint is added), and the networks of
`fake_nets`: a DCGAN, a VAE with a bilinear decoder and two super-resolution networks.

They do not need to be good, only to leave their generation artefacts on real-photo content, so
each trains for a fixed, small step budget on the real train patches. One loop trains all of
them (`train_fake_model`): seeded, resumable from a safetensors + JSON checkpoint, printing
step, loss and s/step, and writing the servable model (`save_pretrained`) on every snapshot.
What a kind trains is its `Recipe`: one network and Adam on a loss for most, two networks and
two optimisers in an adversarial step for the DCGAN; the checkpoint holds all of them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from brushpen.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from brushpen.errors import BadParameter
from brushpen.gan.data import load_image_folder
from brushpen.safety.fake_nets import ConvVAE, DCGANDiscriminator, DCGANGenerator, InterpSR, PixelShuffleSR, \
    bicubic_down
from brushpen.store import atomic_write_json

KINDS = ("diffusion", "decoder-tconv", "decoder-upsample", "dcgan", "vae", "sr-shuffle", "sr-interp")
TRAIN_TIMESTEPS = 1000
# The model predicts the clean image x0 ("sample"), not the noise: a few hundred steps leave an
# epsilon (or v) model unable to see the faint noise of the last timesteps (epsilon MSE 0.64 at
# t=10 after 300 steps here) and DDIM then ends in pure noise; the last DDIM step returns the
# x0 prediction itself, so an under-trained x0 model ends in smooth images instead.
PREDICTION = "sample"
GAN_BETAS = (0.5, 0.999)  # DCGAN's Adam: a lower beta1 keeps the two players' updates from overshooting
# The VAE's KL weight (on the per-element mean KL against the per-pixel L1): small, so the posterior
# stays narrow and a sampled latent still decodes to its host patch, yet it is a distribution.
KL_WEIGHT = 0.01
SR_SCALES = (2, 4)  # both SR kinds learn both factors; the factor is drawn per training step


class ConvAutoencoder(ModelMixin, ConfigMixin):
    """64x64 RGB -> 16x16 latent -> 64x64 RGB. The 6x bottleneck makes the decoder synthesise
    the fine detail, so its up-sampling leaves its trace (checkerboard for `tconv`, blocky
    nearest-neighbour periodicity for `upsample`)."""

    @register_to_config
    def __init__(self, upsampler: str = "tconv", width: int = 32, latent: int = 8):
        super().__init__()
        if upsampler not in ("tconv", "upsample"):
            raise BadParameter("upsampler must be tconv or upsample")
        w = width
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), act(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, latent, 1))
        if upsampler == "tconv":
            up = [nn.ConvTranspose2d(latent, 2 * w, 4, stride=2, padding=1), act(),
                  nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), act()]
        else:
            up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(latent, 2 * w, 3, padding=1), act(),
                  nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1), act()]
        self.decoder = nn.Sequential(*up, nn.Conv2d(w, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def small_unet(resolution: int = 32) -> UNet2DModel:
    """About 3 M parameters: widths (32, 64, 64, 128), one ResNet per level, attention at /4."""
    down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    return UNet2DModel(sample_size=resolution, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(32, 64, 64, 128), down_block_types=down,
                       up_block_types=tuple(t.replace("Down", "Up") for t in reversed(down)),
                       norm_num_groups=8, attention_head_dim=32)


@dataclass
class FakeModelConfig:
    """A training run of one fake generator. `resolution` is 32 for diffusion (sampling 64x64
    pixel-space DDIM costs 4x more than this 2-core box can spare) and 64 for the others (for
    the DCGAN, the size it generates)."""

    kind: str
    data: Path                  # folder of real TRAIN patches
    out: Path                   # model folder: model files, train.json, checkpoint/
    steps: int = 600
    batch: int = 32
    lr: float = 2e-4            # Adam's; the DCGAN's two optimisers use it with betas GAN_BETAS
    resolution: int | None = None  # None: 32 for diffusion, 64 for the others
    seed: int = 0
    snap_steps: int = 50
    threads: int | None = None
    device: str = "cpu"         # "cuda" on a GPU machine; random draws stay on the CPU generator
    minutes: float | None = None   # wall-clock budget: stop at the first snapshot past it

    def res(self) -> int:
        return self.resolution or (32 if self.kind == "diffusion" else 64)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise BadParameter(f"unknown fake generator '{self.kind}': pick one of {', '.join(KINDS)}")
        if self.steps < 1 or self.batch < 1:
            raise BadParameter("steps and batch must be at least 1")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BadParameter(f"--device {self.device}: no CUDA device here")


_CLASSES = {"diffusion": UNet2DModel, "decoder-tconv": ConvAutoencoder, "decoder-upsample": ConvAutoencoder,
            "dcgan": DCGANGenerator, "vae": ConvVAE, "sr-shuffle": PixelShuffleSR, "sr-interp": InterpSR}


def build_model(kind: str, resolution: int) -> nn.Module:
    """A fresh servable network of `kind` (for the DCGAN its generator)."""
    if kind == "diffusion":
        return small_unet(resolution)
    if kind.startswith("decoder-"):
        return ConvAutoencoder(upsampler=kind.split("-", 1)[1])
    if kind == "dcgan":
        return DCGANGenerator(resolution=resolution)
    if kind == "sr-shuffle":
        return PixelShuffleSR(scales=SR_SCALES)
    return _CLASSES[kind]()


def load_model(folder: Path) -> nn.Module:
    """The trained generator in `folder` (written by `train_fake_model`), in eval mode."""
    info = read_train_state(folder)
    return _CLASSES[info["kind"]].from_pretrained(Path(folder) / "model").eval()


def read_train_state(folder: Path) -> dict:
    path = Path(folder) / "train.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---- what one training step does, per kind --------------------------------------------------

@dataclass
class Recipe:
    """What a run trains: the checkpointed networks and optimisers (by name), one step on a batch
    of real patches in [-1, 1] returning its losses, and the network `save_pretrained` writes."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    step: Callable[[torch.Tensor], dict[str, float]]
    servable: nn.Module


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _loss_fn(kind: str, model: nn.Module, rng: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind.startswith("decoder-"):
        return lambda x: F.l1_loss(model(x), x)
    if kind == "vae":
        def vae_loss(x: torch.Tensor) -> torch.Tensor:
            recon, mu, logvar = model(x, generator=rng)
            kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).mean()
            return F.l1_loss(recon, x) + KL_WEIGHT * kl
        return vae_loss
    if kind.startswith("sr-"):
        def sr_loss(x: torch.Tensor) -> torch.Tensor:
            r = SR_SCALES[int(torch.randint(len(SR_SCALES), (1,), generator=rng))]
            return F.l1_loss(model(bicubic_down(x, r), r), x)
        return sr_loss
    sched = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=PREDICTION)

    def diffusion_loss(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=rng).to(x.device)
        t = torch.randint(0, TRAIN_TIMESTEPS, (x.shape[0],), generator=rng).to(x.device)
        return F.mse_loss(model(sched.add_noise(x, noise, t), t).sample, x)
    return diffusion_loss


def _single_recipe(cfg: FakeModelConfig, res: int, rng: torch.Generator) -> Recipe:
    model = build_model(cfg.kind, res)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = _loss_fn(cfg.kind, model, rng)

    def step(x: torch.Tensor) -> dict[str, float]:
        loss = loss_fn(x)
        _update(opt, loss)
        return {"loss": loss.item()}
    return Recipe({"model": model}, {"model": opt}, step, model)


def _gan_recipe(cfg: FakeModelConfig, res: int, rng: torch.Generator) -> Recipe:
    """DCGAN with the non-saturating logistic loss: D minimises softplus(D(G(z))) + softplus(-D(x)),
    then G minimises softplus(-D(G(z))) against the updated D."""
    G = build_model("dcgan", res)
    D = DCGANDiscriminator(width=G.config.width, resolution=res)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=GAN_BETAS)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=GAN_BETAS)

    def step(real: torch.Tensor) -> dict[str, float]:
        fake = G(torch.randn(real.shape[0], G.config.z_dim, generator=rng).to(real.device))
        loss_D = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
        _update(opt_D, loss_D)
        loss_G = F.softplus(-D(fake)).mean()
        _update(opt_G, loss_G)
        return {"loss_D": loss_D.item(), "loss_G": loss_G.item()}
    return Recipe({"G": G, "D": D}, {"G": opt_G, "D": opt_D}, step, G)


# ---- the training loop ----------------------------------------------------------------------

def _load_train_images(cfg: FakeModelConfig, res: int) -> torch.Tensor:
    data = load_image_folder(Path(cfg.data), 64, use_labels=False).images
    if res != 64:  # area-average: the same content at the model's resolution
        data = F.interpolate(data.float(), size=(res, res), mode="area").round().to(torch.uint8)
    return data


def _batch(data: torch.Tensor, batch: int, rng: torch.Generator) -> torch.Tensor:
    """A random batch in [-1, 1], each image mirrored with probability 1/2 (on `data`'s device;
    the draws on the CPU generator, so a CPU run is the same with or without a GPU around)."""
    x = data[torch.randint(0, len(data), (batch,), generator=rng).to(data.device)].float() / 127.5 - 1
    flip = (torch.rand(batch, generator=rng) < 0.5).to(data.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train_fake_model(cfg: FakeModelConfig, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one fake generator to `cfg.steps`; returns the train.json record."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, res = Path(cfg.out), cfg.res()
    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    recipe = (_gan_recipe if cfg.kind == "dcgan" else _single_recipe)(cfg, res, rng)
    for m in recipe.modules.values():
        m.to(cfg.device)     # in place: the optimisers keep their parameters
    if cfg.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    step, seconds, last_loss = 0, 0.0, float("nan")
    ckpt = find_checkpoint(out / "checkpoint")
    if ckpt is not None:
        rngs, s = load_checkpoint(ckpt, recipe.modules, recipe.optimizers)
        rng.set_state(rngs["rank0"])
        step, seconds, last_loss = s["step"], s["seconds"], s.get("loss", last_loss)
        log(f"resumed {cfg.kind} at step {step}")
    record = {"kind": cfg.kind, "step": step, "steps": cfg.steps, "seconds": round(seconds, 1),
              "loss": last_loss, "resolution": res, "command": command,
              "params": sum(p.numel() for p in recipe.servable.parameters()),
              "prediction": PREDICTION if cfg.kind == "diffusion" else None,
              "config": json.loads(json.dumps(asdict(cfg), default=str))}
    if step >= cfg.steps and (out / "model" / "config.json").is_file():
        return record
    data = _load_train_images(cfg, res).to(cfg.device)
    for m in recipe.modules.values():
        m.train()
    window, t_window, t_start = [], time.time(), time.time()
    while step < cfg.steps:
        t0 = time.time()
        window.append(recipe.step(_batch(data, cfg.batch, rng)))
        step += 1
        seconds += time.time() - t0
        if step % cfg.snap_steps == 0 or step == cfg.steps:
            means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            last_loss = next(iter(means.values()))
            log(f"{cfg.kind} step {step:6d}/{cfg.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in means.items())
                + f"  s/step {(time.time() - t_window) / len(window):.2f}")
            window, t_window = [], time.time()
            save_checkpoint(out / "checkpoint", recipe.modules, recipe.optimizers, {"rank0": rng.get_state()},
                            {"step": step, "seconds": seconds, "loss": last_loss})
            recipe.servable.save_pretrained(out / "model")  # safetensors + config.json
            record.update(step=step, seconds=round(seconds, 1), **{k: round(v, 5) for k, v in means.items()})
            record["loss"] = round(last_loss, 5)
            atomic_write_json(out / "train.json", record)
            if cfg.minutes is not None and time.time() - t_start >= 60 * cfg.minutes:
                log(f"{cfg.kind}: {cfg.minutes:g} minutes up at step {step}")
                break
    return record


# ---- sampling and applying the trained generators -------------------------------------------

@torch.no_grad()
def ddim_sample(unet: UNet2DModel, num: int, generator: torch.Generator, steps: int = 20,
                prediction: str = PREDICTION) -> torch.Tensor:
    """`num` images in [-1, 1] from pure noise with `steps` deterministic DDIM steps (eta 0)."""
    sched = DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=prediction)
    sched.set_timesteps(steps)
    res = unet.config.sample_size
    x = torch.randn((num, 3, res, res), generator=generator)
    for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x).prev_sample
    return x.clamp(-1, 1)


@torch.no_grad()
def ddpm_sample(unet: UNet2DModel, num: int, generator: torch.Generator, steps: int = 50,
                prediction: str = PREDICTION) -> torch.Tensor:
    """`num` images in [-1, 1] with DDPM's stochastic ancestral sampler over `steps` of the
    training timesteps: fresh noise (from `generator`) joins at every step."""
    sched = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=prediction)
    sched.set_timesteps(steps)
    res = unet.config.sample_size
    x = torch.randn((num, 3, res, res), generator=generator)
    for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


@torch.no_grad()
def inpaint_ddim(unet: UNet2DModel, known: torch.Tensor, keep: torch.Tensor, generator: torch.Generator,
                 steps: int = 20, prediction: str = PREDICTION) -> torch.Tensor:
    """RePaint-style inpainting with DDIM: before each step, the known pixels (`keep` 1) are
    replaced by the real image `known` noised to that timestep, so the model fills the rest
    (`keep` 0) consistently with it. `known` is [-1, 1] NCHW at the model's resolution."""
    sched = DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=prediction)
    sched.set_timesteps(steps)
    x = torch.randn(known.shape, generator=generator)
    for t in sched.timesteps:
        noised = sched.add_noise(known, torch.randn(known.shape, generator=generator), t.repeat(len(known)))
        x = keep * noised + (1 - keep) * x
        x = sched.step(unet(x, t).sample, t, x).prev_sample
    return (keep * known + (1 - keep) * x).clamp(-1, 1)


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


@torch.no_grad()
def reconstruct(model: ConvAutoencoder, images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW real patches -> the autoencoder's [-1, 1] reconstructions."""
    return model(_unit(images)).clamp(-1, 1)


@torch.no_grad()
def vae_resample(model: ConvVAE, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 NCHW real patches -> decodings of a latent drawn from each one's posterior, in [-1, 1]."""
    return model(_unit(images), generator=generator)[0].clamp(-1, 1)


@torch.no_grad()
def super_resolve(model: nn.Module, images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 NCHW real patches -> the SR network's restoration of their bicubic down-sample by
    `scale`, in [-1, 1] and of the patches' own size."""
    x = _unit(images)
    out = model(bicubic_down(x, scale), scale).clamp(-1, 1)
    assert out.shape == x.shape, (out.shape, x.shape)
    return out
