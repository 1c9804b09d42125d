"""The StyleGAN2 training loop: losses, lazy regularization, EMA, adaptive augmentation, snapshots.

One step runs four phases, as StyleGAN2 does:
  G main : non-saturating logistic loss on D(augment(G(z)))
  G reg  : path-length regularization, every `pl_interval` steps (off when pl_weight = 0)
  D main : logistic loss on augmented fakes and reals; feeds the adaptive-augment statistic r_t
  D reg  : R1 gradient penalty on reals, every `r1_interval` steps
Lazy regularization rescales Adam's lr and betas as in the paper. The generator EMA has a
half-life in kimg. All randomness comes from one seeded torch.Generator on the training device,
which the checkpoint saves, so a killed and resumed run ends with the same weights as an
uninterrupted one.

One code path for the CPU and CUDA: the dataset lives on the device as one uint8 tensor, z, labels,
noise and augmentation are drawn there, and losses stay on the device until a tick reads them, so
a step never waits on the host. On CUDA, `precision` (TF32 or bf16 autocast for the main passes;
R1 and path length stay fp32), `channels_last` and `compile` buy speed. A run stops cleanly at a
snapshot when its wall-clock budget (`minutes`) is spent or on SIGINT/SIGTERM, and logs one JSON
line per tick to `stats.jsonl` beside its checkpoint.
Runs under `accelerate`: one process, or `accelerate launch` / `torchrun` for several, where
gradients are averaged with one all-reduce per phase.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator

from brushpen.checkpoint import find_checkpoint, load_checkpoint, missing_parts, save_checkpoint
from brushpen.config import get_settings
from brushpen.errors import BadParameter
from brushpen.gan.augment import AdaptiveAugment, augment
from brushpen.gan.data import ImageDataset, load_image_folder
from brushpen.gan.networks import StyleGANDiscriminator, StyleGANGenerator
from brushpen.gan.snapshot import write_store_model
from brushpen.gan.stats import StatsLog
from brushpen.gan.train_config import EMA_KIMG_PER_32, TrainConfig

__all__ = ["EMA_KIMG_PER_32", "TrainConfig", "Trainer"]  # the config is re-exported for callers


def _lazy_adam(params, lr: float, beta2: float, interval: int) -> torch.optim.Adam:
    ratio = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, beta2**ratio), eps=1e-8)


class Trainer:
    """Three hooks, all optional:
    - `start(trainer)` runs once G and D exist, before G_ema and the optimizers are made: a fine-tune
      loads a base into them there, wraps layers in LoRA and lists D's frozen modules in `d_frozen`
      (see gan/finetune.py). Only parameters that still require grad are optimized.
    - `write_model(trainer)` replaces the store-model write of each snapshot (a LoRA run saves its
      adapter instead).
    - `progress(nimg, total_nimg, stats)` is called after every step."""

    def __init__(self, cfg: TrainConfig, dataset: ImageDataset | None = None,
                 log: Callable[[str], None] | None = None,
                 write_model: Callable[["Trainer"], None] | None = None,
                 progress: Callable[[int, int, dict], None] | None = None,
                 start: Callable[["Trainer"], None] | None = None):
        cfg.validate()
        self.cfg, self.log = cfg, log or (lambda msg: print(msg, flush=True))
        self.write_model, self.progress = write_model, progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.acc = Accelerator(cpu=get_settings().device == "cpu" or not torch.cuda.is_available())
        self.device = self.acc.device
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.data = dataset or load_image_folder(cfg.data, cfg.resolution, use_labels=cfg.cond,
                                                 max_images=cfg.max_images)
        if cfg.cond and self.data.labels is None:
            raise BadParameter(f"--cond needs labels: {cfg.data} has no dataset.json or class folders")
        self.num_classes = len(self.data.class_names) if cfg.cond else 0
        # The whole set lives on the device (64x64x3 uint8: 40 MiB for 3,400 images); steps index it there.
        self.images = self.data.images.to(self.device)
        self.labels = self.data.labels.to(self.device) if self.num_classes else None
        self._setup_precision()
        if self.acc.is_main_process:
            self.log(f"dataset: {len(self.data)} images ({self.data.skipped} skipped), "
                     f"{self.num_classes or 'no'} classes, {self.world} process(es) on {self.device}, "
                     f"precision {self.precision}")

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.G = StyleGANGenerator(cfg.resolution, cfg.z_dim, cfg.w_dim, cfg.mapping_layers,
                                   cfg.channels, self.num_classes,
                                   self.data.class_names if cfg.cond else None).to(self.device)
        self.D = StyleGANDiscriminator(cfg.resolution, cfg.channels, self.num_classes).to(self.device)
        self.d_frozen: list[torch.nn.Module] = []  # D's modules that stay fixed (Freeze-D), set by `start`
        if start is not None:
            start(self)
            self._train_D(True)
        if cfg.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = _lazy_adam([p for p in self.G.parameters() if p.requires_grad],
                                cfg.lr if cfg.lr_g is None else cfg.lr_g, cfg.beta2,
                                cfg.pl_interval if cfg.pl_weight > 0 else 0)
        self.opt_D = _lazy_adam([p for p in self.D.parameters() if p.requires_grad], cfg.lr, cfg.beta2,
                                cfg.r1_interval)
        self.ada = AdaptiveAugment(p=cfg.augment_p, target=cfg.ada_target, speed_kimg=cfg.ada_kimg,
                                   fixed=cfg.augment != "ada")
        self.rng = torch.Generator(self.device).manual_seed(cfg.seed * 1000 + self.rank)
        self.step, self.nimg, self.pl_mean, self.train_seconds = 0, 0, 0.0, 0.0
        self.per_rank = max(1, cfg.batch // self.world)
        # The compiled callables share their modules' parameters; R1's double backward stays eager.
        self.synthesis = torch.compile(self.G.synthesis) if cfg.compile else self.G.synthesis
        self.D_main = torch.compile(self.D) if cfg.compile else self.D
        self.stats_log = StatsLog(cfg.ckpt_dir().parent / "stats.jsonl") if self.acc.is_main_process else None
        self._stop_signal: int | None = None
        if cfg.resume:
            self._resume()

    def _setup_precision(self) -> None:
        """TF32 and bf16 on CUDA only: on this kind of CPU bf16 matmul runs at 0.2 GFLOP/s."""
        self.precision = self.cfg.precision if self.device.type == "cuda" else "fp32"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
            tf32 = self.precision in ("tf32", "bf16")
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ---- state ---------------------------------------------------------------------------

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
        missing = missing_parts(ckpt, ["G", "D"])
        rng, s = load_checkpoint(ckpt, self._modules(), {"G": self.opt_G, "D": self.opt_D})
        self.step, self.nimg, self.pl_mean = s["step"], s["nimg"], s["pl_mean"]
        self.train_seconds = s.get("train_seconds", 0.0)
        self.ada.load(s["ada"])
        state = rng.get(f"rank{self.rank}", rng.get("rank0"))
        try:
            self.rng.set_state(state)
        except (RuntimeError, TypeError, ValueError):  # none saved, or another device's kind of state
            self.rng.manual_seed(self.cfg.seed * 1000 + self.rank + 7919 * self.step)
            missing = [m for m in missing if m != "rng"] + ["rng (reseeded)"]
        if self.stats_log is not None:
            self.stats_log.truncate_after(self.nimg / 1000)
        if self.acc.is_main_process:
            self.log(f"resumed from {ckpt} at step {self.step}, kimg {self.nimg / 1000:.3f}, p {self.ada.p:.3f}"
                     + (f"; fresh state for: {', '.join(missing)}" if missing else ""))

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
                                     "config": json.loads(json.dumps(asdict(self.cfg), default=str))},
                            moments_dtype=torch.bfloat16 if self.cfg.compact_checkpoint else None)
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

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.rng, device=self.device)

    def _reals(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, res = self.per_rank, self.cfg.resolution
        idx = torch.randint(0, len(self.images), (n,), generator=self.rng, device=self.device)
        img = self.images[idx].to(torch.float32) / 127.5 - 1
        if self.cfg.mirror:
            img = torch.where((self._rand(n) < 0.5)[:, None, None, None], img.flip(3), img)
        assert img.shape == (n, 3, res, res), img.shape
        if self.cfg.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return img, (self.labels[idx] if self.num_classes else None)

    def _fake_labels(self) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        idx = torch.randint(0, len(self.images), (self.per_rank,), generator=self.rng, device=self.device)
        return self.labels[idx]

    def _generate(self, labels: torch.Tensor | None, update_w_avg: bool = False, reg: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fakes and their ws. Style mixing is per sample (SG2-ADA): a sample takes a second w from
        a random layer on with probability `style_mixing`; no host sync decides it."""
        G, n = self.G, self.per_rank
        z = torch.randn(n, G.z_dim, generator=self.rng, device=self.device)
        ws = G.map(z, labels, update_w_avg=update_w_avg)
        if self.cfg.style_mixing > 0:
            cutoff = torch.randint(1, G.num_ws, (n,), generator=self.rng, device=self.device)
            cutoff = torch.where(self._rand(n) < self.cfg.style_mixing, cutoff, G.num_ws)
            z2 = torch.randn(n, G.z_dim, generator=self.rng, device=self.device)
            later = torch.arange(G.num_ws, device=self.device)[None, :] >= cutoff[:, None]
            ws = torch.where(later[:, :, None], G.map(z2, labels), ws)
        # Noise drawn here, outside synthesis, so a compiled synthesis holds no random draws. The
        # mapping stays in fp32 (its w_avg tracking too); only the convolutions take bf16.
        noises = G.draw_noise(n, self.rng, self.device)
        if reg:  # path length: a double backward, so eager and fp32
            return self.G.synthesis(ws, noises=noises), ws
        with self._autocast():
            return self.synthesis(ws, noises=noises), ws

    def _D(self, img: torch.Tensor, labels: torch.Tensor | None, main: bool = True) -> torch.Tensor:
        """D's logits in fp32; the main passes run under the chosen precision, R1 (main=False) in fp32."""
        if self.ada.p > 0:
            img = augment(img, self.ada.p, generator=self.rng)
        with self._autocast() if main else nullcontext():
            return (self.D_main if main else self.D)(img, labels).float()

    def train_step(self) -> dict[str, torch.Tensor]:
        """One step of the four phases. Returns the losses as device tensors (read them at a tick)."""
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
        stats["loss_G"] = loss_g.detach()

        # G reg: path length, so a fixed-size step in w moves the image by a fixed amount (fp32).
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            self.opt_G.zero_grad(set_to_none=True)
            fake, ws = self._generate(self._fake_labels(), reg=True)
            noise = torch.randn(fake.shape, generator=self.rng, device=self.device) / math.sqrt(fake.shape[2] * fake.shape[3])
            (grad,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            self.pl_mean += 0.01 * (lengths.mean().item() - self.pl_mean)
            loss_pl = (lengths - self.pl_mean).square().mean() * cfg.pl_weight * cfg.pl_interval
            loss_pl.backward()
            self._sync_grads(self.G)
            self.opt_G.step()
            stats["loss_pl"] = loss_pl.detach()
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
        stats["loss_D"] = loss_d.detach()

        # D reg: R1 penalty on reals keeps D smooth around the data (eager D, fp32).
        if cfg.r1() > 0 and self.step % cfg.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            real, real_labels = self._reals()
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(self._D(real, real_labels, main=False).sum(), real, create_graph=True)
            loss_r1 = grad.square().sum([1, 2, 3]).mean() * (cfg.r1() / 2) * cfg.r1_interval
            loss_r1.backward()
            self._sync_grads(self.D)
            self.opt_D.step()
            stats["loss_R1"] = loss_r1.detach()

        self.nimg += self.per_rank * self.world
        self.step += 1
        self._update_ema()
        if cfg.augment == "ada" and self.step % cfg.ada_interval == 0:
            self._reduce_ada()
            self.ada.update(self.per_rank * self.world * cfg.ada_interval)  # the one host sync, every few steps
        return stats

    def _reduce_ada(self) -> None:
        if self.world > 1:
            t = torch.tensor([float(self.ada._sum), float(self.ada._count)], dtype=torch.float64,
                             device=self.device)
            dist.all_reduce(t)
            self.ada._sum, self.ada._count = float(t[0]), int(t[1])

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_nimg = self.cfg.ema() * 1000
        if self.cfg.ema_rampup:
            ema_nimg = min(ema_nimg, self.nimg * self.cfg.ema_rampup)
        beta = 0.5 ** (self.per_rank * self.world / max(ema_nimg, 1e-8))
        # One fused call over all tensors rather than a Python loop over ~90 of them.
        torch._foreach_lerp_(list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()], 1 - beta)
        torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    # ---- the run -------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame) -> None:
        self._stop_signal = signum  # finish the step, snapshot, then stop

    def run(self) -> dict:
        """Train until `kimg`, the `minutes` budget or a SIGINT/SIGTERM; the last two end at a snapshot.
        Returns step, kimg, augment_p and `stopped` (done | minutes | signal | steps)."""
        cfg, total = self.cfg, int(self.cfg.kimg * 1000)
        tick_every, snap_every = max(1, int(cfg.tick_kimg * 1000)), max(1, int(cfg.snapshot_kimg * 1000))
        next_tick = (self.nimg // tick_every + 1) * tick_every
        next_snap = (self.nimg // snap_every + 1) * snap_every
        start = last_snap = tick_start = time.monotonic()
        tick_nimg, sums, count, steps_this_run, stopped = self.nimg, {}, 0, 0, None
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.nimg < total:
                t0 = time.monotonic()
                stats = self.train_step()
                self.train_seconds += time.monotonic() - t0
                steps_this_run += 1
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if self.progress is not None and self.acc.is_main_process:
                    self.progress(self.nimg, total, {**{k: float(v) for k, v in stats.items()},
                                                     "augment_p": self.ada.p})
                now = time.monotonic()
                if self._stop_signal is not None:
                    stopped = "signal"
                elif cfg.minutes is not None and now - start >= cfg.minutes * 60:
                    stopped = "minutes"
                out_of_steps = bool(cfg.stop_after_steps) and steps_this_run >= cfg.stop_after_steps
                if self.nimg >= next_tick or self.nimg >= total or stopped or out_of_steps:
                    self._tick(now - tick_start, self.nimg - tick_nimg, sums, count)
                    tick_start, tick_nimg, sums, count = now, self.nimg, {}, 0
                    next_tick = (self.nimg // tick_every + 1) * tick_every
                timed_snap = cfg.snapshot_minutes is not None and now - last_snap >= cfg.snapshot_minutes * 60
                if self.nimg >= next_snap or self.nimg >= total or stopped or timed_snap:
                    self.snapshot()
                    last_snap = time.monotonic()
                    next_snap = (self.nimg // snap_every + 1) * snap_every
                if stopped:
                    break
                if out_of_steps:  # no snapshot: tests use this as a clean "kill"
                    stopped = "steps"
                    break
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        return {"step": self.step, "kimg": self.nimg / 1000, "augment_p": self.ada.p,
                "stopped": stopped or "done"}

    def _tick(self, seconds: float, images: int, sums: dict, count: int) -> None:
        """The progress line and one stats.jsonl record; the only place losses reach the host."""
        if not self.acc.is_main_process:
            return
        img_s = images / max(seconds, 1e-9)
        losses = {k: round(float(v) / max(count, 1), 5) for k, v in sums.items()}
        parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        self.log(f"kimg {self.nimg / 1000:8.3f}  step {self.step:6d}  sec/kimg {1000 / max(img_s, 1e-9):7.1f}  "
                 f"img/s {img_s:7.1f}  augment_p {self.ada.p:.3f}  {parts}")
        if self.stats_log is not None:
            self.stats_log.append({"kimg": round(self.nimg / 1000, 3), "step": self.step,
                                   "img_per_s": round(img_s, 2), "augment_p": round(self.ada.p, 4),
                                   "train_seconds": round(self.train_seconds, 1), **losses})

    def snapshot(self) -> None:
        """Checkpoint, then refresh the store model (G_ema, samples.png, metrics.json, card.md)."""
        self.save_checkpoint()
        if self.acc.is_main_process and self.write_model is not None:
            self.write_model(self)
        elif self.acc.is_main_process:
            # The store copy is written from the CPU in the standard layout, whatever the device.
            G = copy.deepcopy(self.G_ema).cpu().to(memory_format=torch.contiguous_format)
            write_store_model(G, Path(self.cfg.out), self.cfg, self.nimg, self.train_seconds,
                              len(self.data), self.ada.p)
