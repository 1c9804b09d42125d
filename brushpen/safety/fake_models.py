"""The small generators behind the detector's fake families, other than StyleGAN (which is
`brushpen.gan`): a pixel-space DDPM (`diffusers.UNet2DModel`, sampled with DDIM) and two
convolutional autoencoders whose decoders up-sample in the two ways generators do, a transposed
convolution and a nearest-neighbour up-sample followed by a convolution (AutoGAN-style artefact
simulation: the real content passes through, the decoder's fingerprint is added).

They do not need to be good, only to leave their generation artefacts on real-photo content, so
each trains for a fixed, small step budget on the real train patches. One loop trains all of
them (`train_fake_model`): seeded, resumable from a safetensors + JSON checkpoint, printing
step, loss and s/step, and writing the servable model (`save_pretrained`) on every snapshot.
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
from brushpen.store import atomic_write_json

KINDS = ("diffusion", "decoder-tconv", "decoder-upsample")
TRAIN_TIMESTEPS = 1000
# The model predicts the clean image x0 ("sample"), not the noise: a few hundred steps leave an
# epsilon (or v) model unable to see the faint noise of the last timesteps (epsilon MSE 0.64 at
# t=10 after 300 steps here) and DDIM then ends in pure noise; the last DDIM step returns the
# x0 prediction itself, so an under-trained x0 model ends in smooth images instead.
PREDICTION = "sample"


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
    pixel-space DDIM costs 4x more than this 2-core box can spare) and 64 for the decoders."""

    kind: str
    data: Path                  # folder of real TRAIN patches
    out: Path                   # model folder: model files, train.json, checkpoint/
    steps: int = 600
    batch: int = 32
    lr: float = 2e-4
    resolution: int | None = None  # None: 32 for diffusion, 64 for decoders
    seed: int = 0
    snap_steps: int = 50
    threads: int | None = None

    def res(self) -> int:
        return self.resolution or (32 if self.kind == "diffusion" else 64)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise BadParameter(f"unknown fake generator '{self.kind}': pick one of {', '.join(KINDS)}")
        if self.steps < 1 or self.batch < 1:
            raise BadParameter("steps and batch must be at least 1")


def build_model(kind: str, resolution: int) -> nn.Module:
    if kind == "diffusion":
        return small_unet(resolution)
    return ConvAutoencoder(upsampler=kind.split("-", 1)[1])


def load_model(folder: Path) -> nn.Module:
    """The trained generator in `folder` (written by `train_fake_model`), in eval mode."""
    info = read_train_state(folder)
    cls = UNet2DModel if info["kind"] == "diffusion" else ConvAutoencoder
    return cls.from_pretrained(Path(folder) / "model").eval()


def read_train_state(folder: Path) -> dict:
    path = Path(folder) / "train.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _loss_fn(kind: str, model: nn.Module, rng: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind != "diffusion":
        return lambda x: F.l1_loss(model(x), x)
    sched = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, prediction_type=PREDICTION)

    def loss(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=rng)
        t = torch.randint(0, TRAIN_TIMESTEPS, (x.shape[0],), generator=rng)
        return F.mse_loss(model(sched.add_noise(x, noise, t), t).sample, x)
    return loss


def train_fake_model(cfg: FakeModelConfig, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one fake generator to `cfg.steps`; returns the train.json record."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, res = Path(cfg.out), cfg.res()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.kind, res)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    step, seconds, last_loss = 0, 0.0, float("nan")
    ckpt = find_checkpoint(out / "checkpoint")
    if ckpt is not None:
        rngs, s = load_checkpoint(ckpt, {"model": model}, {"model": opt})
        rng.set_state(rngs["rank0"])
        step, seconds, last_loss = s["step"], s["seconds"], s.get("loss", last_loss)
        log(f"resumed {cfg.kind} at step {step}")
    record = {"kind": cfg.kind, "step": step, "steps": cfg.steps, "seconds": round(seconds, 1),
              "loss": last_loss, "resolution": res, "command": command,
              "params": sum(p.numel() for p in model.parameters()),
              "prediction": PREDICTION if cfg.kind == "diffusion" else None,
              "config": json.loads(json.dumps(asdict(cfg), default=str))}
    if step >= cfg.steps and (out / "model" / "config.json").is_file():
        return record
    data = load_image_folder(Path(cfg.data), 64, use_labels=False).images
    if res != 64:  # area-average down: the same content at the diffusion model's resolution
        data = F.interpolate(data.float(), size=(res, res), mode="area").round().to(torch.uint8)
    loss_fn = _loss_fn(cfg.kind, model, rng)
    model.train()
    window, t_window = [], time.time()
    while step < cfg.steps:
        t0 = time.time()
        idx = torch.randint(0, len(data), (cfg.batch,), generator=rng)
        x = data[idx].float() / 127.5 - 1
        flip = torch.rand(cfg.batch, generator=rng) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seconds += time.time() - t0
        window.append(loss.item())
        if step % cfg.snap_steps == 0 or step == cfg.steps:
            last_loss = float(np.mean(window))
            log(f"{cfg.kind} step {step:6d}/{cfg.steps}  loss {last_loss:.4f}  "
                f"s/step {(time.time() - t_window) / len(window):.2f}")
            window, t_window = [], time.time()
            save_checkpoint(out / "checkpoint", {"model": model}, {"model": opt}, {"rank0": rng.get_state()},
                            {"step": step, "seconds": seconds, "loss": last_loss})
            model.save_pretrained(out / "model")  # safetensors + config.json
            record.update(step=step, seconds=round(seconds, 1), loss=round(last_loss, 5))
            atomic_write_json(out / "train.json", record)
    return record


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
def reconstruct(model: ConvAutoencoder, images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW real patches -> the autoencoder's [-1, 1] reconstructions."""
    return model(images.float() / 127.5 - 1).clamp(-1, 1)
