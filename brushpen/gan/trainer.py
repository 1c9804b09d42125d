"""The StyleGAN2 training loop: losses, lazy regularization, EMA, adaptive augmentation, snapshots.

One step runs four phases, as StyleGAN2 does:
  G main : non-saturating logistic loss on D(augment(G(z)))
  G reg  : path-length regularization, every `pl_interval` steps (off when pl_weight = 0)
  D main : logistic loss on augmented fakes and reals; feeds the adaptive-augment statistic r_t
  D reg  : R1 gradient penalty on reals, every `r1_interval` steps
Lazy regularization rescales Adam's lr and betas as in the paper. The generator EMA has a
half-life in kimg. All randomness comes from one seeded torch.Generator that the checkpoint
saves, so a killed and resumed run ends with the same weights as an uninterrupted one.
Runs under `accelerate`: one process on the CPU, or `accelerate launch` / `torchrun` for several,
where gradients are averaged with one all-reduce per phase.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator

from brushpen.errors import BadParameter
from brushpen.gan.augment import AdaptiveAugment, augment
from brushpen.gan.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from brushpen.gan.data import ImageDataset, load_image_folder
from brushpen.gan.networks import StyleGANDiscriminator, StyleGANGenerator
from brushpen.gan.pipeline import StyleGANPipeline, image_grid
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text, staging_dir

SAMPLE_SEEDS = list(range(64))  # the fixed seeds of every samples.png grid


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults suit a 64x64 dataset of a few thousand images on a CPU."""

    data: Path
    out: Path
    resolution: int = 64
    kimg: float = 100.0                 # train until this many thousand real images were shown
    batch: int = 32                     # total over all processes
    channels: list[int] | None = None   # width per resolution 4..R; None = networks.default_channels
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    cond: bool = False                  # train on the dataset's class labels
    lr: float = 0.0025
    lr_g: float | None = None           # G's own lr (fine-tuning: G slower than D); None = lr
    beta2: float = 0.99
    r1_gamma: float | None = None       # None = 0.0002 * R^2 / batch (the ADA heuristic)
    r1_interval: int = 16
    pl_weight: float = 0.0              # path-length regularization; 2.0 in the paper, 0 = off
    pl_interval: int = 4
    style_mixing: float = 0.5           # probability of a second w after a random crossover
    ema_kimg: float = 10.0              # EMA half-life
    ema_rampup: float | None = 0.05     # early on, half-life <= rampup * images seen
    augment: str = "ada"                # ada | fixed | none
    augment_p: float = 0.0              # initial (ada) or constant (fixed) probability
    ada_target: float = 0.6
    ada_interval: int = 4               # steps between p updates
    ada_kimg: float = 100.0             # p can go 0 -> 1 in this many kimg
    snapshot_kimg: float = 4.0          # checkpoint + store model + samples every this many kimg
    tick_kimg: float = 1.0              # a progress line every this many kimg
    seed: int = 0
    max_images: int | None = None
    mirror: bool = False
    resume: bool = False
    checkpoint_dir: Path | None = None  # default: OUT/checkpoint
    stop_after_steps: int | None = None  # end early after this many steps (tests; a clean "kill")
    threads: int | None = None
    extra: dict = field(default_factory=dict)
    # Fine-tuning (see gan/finetune.py): start G, G_ema and D from a store model instead of at random.
    base: Path | None = None            # the base model folder; its checkpoint/D.safetensors seeds D
    lora_rank: int = 0                  # > 0: train only LoRA matrices in G (gan/lora.py), rest frozen
    lora_alpha: float | None = None     # LoRA scale alpha / rank; None = rank (scale 1)
    freeze_d: int = 0                   # Freeze-D: D's fromRGB and its first K blocks stay fixed

    def r1(self) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * self.resolution**2 / self.batch

    def ckpt_dir(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.out) / "checkpoint"

    def validate(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise BadParameter("resolution must be a power of two >= 8")
        if self.batch < 1 or self.kimg <= 0:
            raise BadParameter("batch must be >= 1 and kimg > 0")
        if self.augment not in ("ada", "fixed", "none"):
            raise BadParameter("augment must be ada, fixed or none")


def _lazy_adam(params, lr: float, beta2: float, interval: int) -> torch.optim.Adam:
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, beta2**ratio), eps=1e-8)


class Trainer:
    """`write_model(trainer)`, when given, replaces the store-model write of each snapshot (a LoRA
    run saves its adapter instead); `progress(nimg, total_nimg, stats)` is called after every step."""

    def __init__(self, cfg: TrainConfig, dataset: ImageDataset | None = None,
                 log: Callable[[str], None] | None = None,
                 write_model: Callable[["Trainer"], None] | None = None,
                 progress: Callable[[int, int, dict], None] | None = None):
        cfg.validate()
        self.cfg, self.log = cfg, log or (lambda msg: print(msg, flush=True))
        self.write_model, self.progress = write_model, progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.device = self.acc.device
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.data = dataset or load_image_folder(cfg.data, cfg.resolution, use_labels=cfg.cond,
                                                 max_images=cfg.max_images)
        if cfg.cond and self.data.labels is None:
            raise BadParameter(f"--cond needs labels: {cfg.data} has no dataset.json or class folders")
        self.num_classes = len(self.data.class_names) if cfg.cond else 0
        if self.acc.is_main_process:
            self.log(f"dataset: {len(self.data)} images ({self.data.skipped} skipped), "
                     f"{self.num_classes or 'no'} classes, {self.world} process(es) on {self.device}")

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.G = StyleGANGenerator(cfg.resolution, cfg.z_dim, cfg.w_dim, cfg.mapping_layers,
                                   cfg.channels, self.num_classes,
                                   self.data.class_names if cfg.cond else None).to(self.device)
        self.D = StyleGANDiscriminator(cfg.resolution, cfg.channels, self.num_classes).to(self.device)
        self.d_frozen: list[torch.nn.Module] = []
        if cfg.base is not None:
            self._start_from_base()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = _lazy_adam([p for p in self.G.parameters() if p.requires_grad],
                                cfg.lr if cfg.lr_g is None else cfg.lr_g, cfg.beta2,
                                cfg.pl_interval if cfg.pl_weight > 0 else 0)
        self.opt_D = _lazy_adam([p for p in self.D.parameters() if p.requires_grad], cfg.lr, cfg.beta2,
                                cfg.r1_interval)
        self.ada = AdaptiveAugment(p=cfg.augment_p, target=cfg.ada_target, speed_kimg=cfg.ada_kimg,
                                   fixed=cfg.augment != "ada")
        self.rng = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.step, self.nimg, self.pl_mean, self.train_seconds = 0, 0, 0.0, 0.0
        self.per_rank = max(1, cfg.batch // self.world)
        if cfg.resume:
            self._resume()

    # ---- state ---------------------------------------------------------------------------

    def _start_from_base(self) -> None:
        """G from the base's store weights (what an adapter is applied to at serving time), D from
        the base's training checkpoint when it kept one; then the LoRAs and Freeze-D."""
        from safetensors.torch import load_file

        from brushpen.gan.lora import apply_lora, trainable_parameters

        base = Path(self.cfg.base)
        self.G.load_state_dict(StyleGANGenerator.from_pretrained(base).state_dict())
        d_file = base / "checkpoint" / "D.safetensors"
        if d_file.exists():
            self.D.load_state_dict(load_file(str(d_file)))
        elif self.acc.is_main_process:
            self.log(f"{base.name} kept no discriminator ({d_file}): D starts at random")
        if self.cfg.lora_rank > 0:
            apply_lora(self.G, self.cfg.lora_rank, self.cfg.lora_alpha, seed=self.cfg.seed)
        if not 0 <= self.cfg.freeze_d <= len(self.D.blocks):
            raise BadParameter(f"freeze_d must lie in 0..{len(self.D.blocks)} (D's blocks)")
        if self.cfg.freeze_d:
            self.d_frozen = [self.D.from_rgb, *self.D.blocks[:self.cfg.freeze_d]]
        self._train_D(True)
        if self.acc.is_main_process:
            self.log(f"fine-tuning {base.name}: {trainable_parameters(self.G):,} trainable G parameters, "
                     f"{trainable_parameters(self.D):,} trainable D parameters")

    def _train_D(self, on: bool) -> None:
        self.D.requires_grad_(on)
        for module in self.d_frozen:
            module.requires_grad_(False)

    def _modules(self) -> dict:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def _resume(self) -> None:
        ckpt = find_checkpoint(self.cfg.ckpt_dir())
        if ckpt is None:
            self.log(f"no checkpoint in {self.cfg.ckpt_dir()}: starting fresh")
            return
        rng, s = load_checkpoint(ckpt, self._modules(), {"G": self.opt_G, "D": self.opt_D})
        self.rng.set_state(rng[f"rank{self.rank}"] if f"rank{self.rank}" in rng else rng["rank0"])
        self.step, self.nimg, self.pl_mean = s["step"], s["nimg"], s["pl_mean"]
        self.train_seconds = s.get("train_seconds", 0.0)
        self.ada.load(s["ada"])
        if self.acc.is_main_process:
            self.log(f"resumed from {ckpt} at step {self.step}, kimg {self.nimg / 1000:.3f}, p {self.ada.p:.3f}")

    def save_checkpoint(self) -> None:
        # Every rank's generator state is gathered so that each rank resumes its own stream.
        states = {f"rank{self.rank}": self.rng.get_state()}
        if self.world > 1:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, self.rng.get_state())
            states = {f"rank{i}": s for i, s in enumerate(gathered)}
        if self.acc.is_main_process:
            save_checkpoint(self.cfg.ckpt_dir(), self._modules(), {"G": self.opt_G, "D": self.opt_D},
                            states, {"step": self.step, "nimg": self.nimg, "pl_mean": self.pl_mean,
                                     "ada": self.ada.state(), "train_seconds": self.train_seconds,
                                     "config": json.loads(json.dumps(asdict(self.cfg), default=str))})
        self.acc.wait_for_everyone()

    # ---- one step ------------------------------------------------------------------------

    def _sync_grads(self, module: torch.nn.Module) -> None:
        if self.world == 1:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def _reals(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(0, len(self.data), (self.per_rank,), generator=self.rng)
        img = self.data.images[idx].to(self.device, torch.float32) / 127.5 - 1
        if self.cfg.mirror:
            flip = torch.rand(self.per_rank, generator=self.rng) < 0.5
            img = torch.where(flip[:, None, None, None].to(self.device), img.flip(3), img)
        labels = self.data.labels[idx].to(self.device) if self.num_classes else None
        return img, labels

    def _fake_labels(self) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        idx = torch.randint(0, len(self.data), (self.per_rank,), generator=self.rng)
        return self.data.labels[idx].to(self.device)

    def _generate(self, labels: torch.Tensor | None, update_w_avg: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        G, n = self.G, self.per_rank
        z = torch.randn(n, G.z_dim, generator=self.rng).to(self.device)
        ws = G.map(z, labels, update_w_avg=update_w_avg)
        if self.cfg.style_mixing > 0 and float(torch.rand([], generator=self.rng)) < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, [], generator=self.rng))
            z2 = torch.randn(n, G.z_dim, generator=self.rng).to(self.device)
            ws[:, cutoff:] = G.map(z2, labels)[:, cutoff:]
        return G.synthesis(ws, generator=self.rng), ws

    def _D(self, img: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.ada.p > 0:
            img = augment(img, self.ada.p, generator=self.rng)
        return self.D(img, labels)

    def train_step(self) -> dict[str, float]:
        cfg, stats = self.cfg, {}
        # G main: make D call the fakes real.
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        labels = self._fake_labels()
        fake, _ = self._generate(labels, update_w_avg=True)
        loss_g = F.softplus(-self._D(fake, labels)).mean()
        loss_g.backward()
        self._sync_grads(self.G)
        self.opt_G.step()
        stats["loss_G"] = loss_g.item()

        # G reg: path length, so a fixed-size step in w moves the image by a fixed amount.
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            self.opt_G.zero_grad(set_to_none=True)
            fake, ws = self._generate(self._fake_labels())
            noise = torch.randn(fake.shape, generator=self.rng).to(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
            (grad,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            self.pl_mean += 0.01 * (lengths.mean().item() - self.pl_mean)
            loss_pl = (lengths - self.pl_mean).square().mean() * cfg.pl_weight * cfg.pl_interval
            loss_pl.backward()
            self._sync_grads(self.G)
            self.opt_G.step()
            stats["loss_pl"] = loss_pl.item()
        self._train_D(True)

        # D main: fakes low, reals high.
        self.opt_D.zero_grad(set_to_none=True)
        fake_labels = self._fake_labels()
        with torch.no_grad():
            fake, _ = self._generate(fake_labels)
        real, real_labels = self._reals()
        real_logits = self._D(real, real_labels)
        loss_d = F.softplus(self._D(fake, fake_labels)).mean() + F.softplus(-real_logits).mean()
        loss_d.backward()
        self._sync_grads(self.D)
        self.opt_D.step()
        self.ada.accumulate(real_logits.detach())
        stats["loss_D"] = loss_d.item()

        # D reg: R1 penalty on reals keeps D smooth around the data.
        if cfg.r1() > 0 and self.step % cfg.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            real, real_labels = self._reals()
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(self._D(real, real_labels).sum(), real, create_graph=True)
            loss_r1 = grad.square().sum([1, 2, 3]).mean() * (cfg.r1() / 2) * cfg.r1_interval
            loss_r1.backward()
            self._sync_grads(self.D)
            self.opt_D.step()
            stats["loss_R1"] = loss_r1.item()

        self.nimg += self.per_rank * self.world
        self.step += 1
        self._update_ema()
        if cfg.augment == "ada" and self.step % cfg.ada_interval == 0:
            self._reduce_ada()
            self.ada.update(self.per_rank * self.world * cfg.ada_interval)
        stats["augment_p"] = self.ada.p
        return stats

    def _reduce_ada(self) -> None:
        if self.world > 1:
            t = torch.tensor([self.ada._sum, float(self.ada._count)], dtype=torch.float64)
            dist.all_reduce(t)
            self.ada._sum, self.ada._count = float(t[0]), int(t[1])

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = self.cfg.ema_kimg * 1000
        if self.cfg.ema_rampup:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.per_rank * self.world / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> dict:
        cfg, total = self.cfg, int(self.cfg.kimg * 1000)
        next_tick = (self.nimg // int(cfg.tick_kimg * 1000) + 1) * int(cfg.tick_kimg * 1000)
        snap_every = max(1, int(cfg.snapshot_kimg * 1000))
        next_snap = (self.nimg // snap_every + 1) * snap_every
        tick_start, tick_nimg, sums, count = time.time(), self.nimg, {}, 0
        steps_this_run = 0
        while self.nimg < total:
            t0 = time.time()
            stats = self.train_step()
            self.train_seconds += time.time() - t0
            steps_this_run += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.progress is not None and self.acc.is_main_process:
                self.progress(self.nimg, total, stats)
            if self.nimg >= next_tick or self.nimg >= total:
                dt = time.time() - tick_start
                sec_kimg = dt / max(self.nimg - tick_nimg, 1) * 1000
                if self.acc.is_main_process:
                    parts = " ".join(f"{k} {v / count:.4f}" for k, v in sums.items() if k != "augment_p")
                    self.log(f"kimg {self.nimg / 1000:8.3f}  step {self.step:6d}  sec/kimg {sec_kimg:7.1f}  "
                             f"img/s {1000 / sec_kimg:6.1f}  augment_p {self.ada.p:.3f}  {parts}")
                tick_start, tick_nimg, sums, count = time.time(), self.nimg, {}, 0
                next_tick += int(cfg.tick_kimg * 1000)
            if self.nimg >= next_snap or self.nimg >= total:
                self.snapshot()
                next_snap += snap_every
            if cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps:
                break
        return {"step": self.step, "kimg": self.nimg / 1000, "augment_p": self.ada.p}

    def snapshot(self) -> None:
        """Checkpoint, then refresh the store model (G_ema, samples.png, metrics.json, card.md)."""
        self.save_checkpoint()
        if self.acc.is_main_process and self.write_model is not None:
            self.write_model(self)
        elif self.acc.is_main_process:
            write_store_model(self.G_ema, Path(self.cfg.out), self.cfg, self.nimg, self.train_seconds,
                              len(self.data), self.ada.p)


def sample_grid(G: StyleGANGenerator, seeds: list[int] = SAMPLE_SEEDS, psi: float = 1.0,
                classes: list[int] | None = None):
    """An 8-column grid, one image per seed. `classes` (a conditional G's labels, e.g. those a
    fine-tuning set uses) are cycled through; without them each seed draws its own label."""
    pipe = StyleGANPipeline(G)
    images = [pipe(1, torch.Generator().manual_seed(s), truncation_psi=psi, noise_mode="none",
                   label=classes[i % len(classes)] if classes and G.num_classes else None)[0]
              for i, s in enumerate(seeds)]
    return image_grid(images, cols=8)


def write_store_model(G: StyleGANGenerator, out: Path, cfg: TrainConfig, nimg: int,
                      train_seconds: float, num_images: int, augment_p: float,
                      sample_classes: list[int] | None = None) -> None:
    """Write the servable model files into the store folder, each one atomically."""
    import io
    import shutil

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


def default_card(name: str, cfg: TrainConfig, metrics: dict) -> str:
    """A starting card; edit it with the data source and licence of your own run."""
    flags = f"--data {cfg.data} --out {cfg.out} --resolution {cfg.resolution} --kimg {cfg.kimg} --batch {cfg.batch}"
    if cfg.cond:
        flags += " --cond"
    return (f"# {name}\n\nA StyleGAN2-style generator trained with brushpen.\n\n"
            f"- Data: `{cfg.data}`\n- Command: `brushpen gan train {flags}`\n"
            f"- Metrics at write time: `{json.dumps(metrics, sort_keys=True)}` (see metrics.json for the latest)\n"
            f"- Licence: that of the training data.\n")
