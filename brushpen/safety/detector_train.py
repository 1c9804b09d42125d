"""Training the detector (`brushpen detect train`): augmented, class-balanced batches on accelerate,
resumable, then temperature and verdict bands fitted on the validation split.

Loss per batch: binary cross-entropy of the image logit against the label, plus `loc_weight` x the
per-region cross-entropy of the localisation head against the mask average-pooled to its grid
(all 0 for reals, all 1 for whole-image fakes, the splice mask for splices): the heatmap is the
model's own, trained where a splice really sits.

Checkpoints (`OUT/checkpoint/`, every `snap` steps and at the end) are the model and AdamW state
as safetensors plus `state.json` (`brushpen.checkpoint`, staged then swapped in, so a kill
leaves the old or the new one whole). The batch at step s is drawn from a generator seeded with
(seed, s), so a resumed run sees exactly the batches an uninterrupted one would have.
The finished model folder holds `config.json` (architecture + calibration), `model.safetensors`
and `train.json` (the config, the command, steps, losses, time).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from brushpen.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from brushpen.errors import BadParameter
from brushpen.safety.calibrate import calibrate
from brushpen.safety.detector import Detector, DetectorConfig, save_detector, to_tensor
from brushpen.safety.detector_data import RECIPES, BalancedSampler, Sample, augment, describe_sources, gather, \
    load_arrays
from brushpen.store import atomic_write_json


@dataclass
class TrainConfig:
    """Every knob of a training run, with the shipped model's defaults."""

    out: Path
    real: list[Path] = field(default_factory=list)
    fake: list[Path] = field(default_factory=list)
    families: tuple[str, ...] | None = None      # None = every family found
    exclude: tuple[str, ...] = ()                # leave-one-family-out runs
    exclude_sources: tuple[str, ...] = ()        # leave-one-source-out runs (detector_data.photo_source)
    augment: str = "chain"                       # detector_data.RECIPES: post-processing chains, or "basic"
    steps: int = 3000
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loc_weight: float = 0.5
    seed: int = 0
    snap: int = 250
    fpr: float = 0.01
    fnr: float = 0.01
    resume: bool = False                         # continue from OUT/checkpoint
    model: DetectorConfig = field(default_factory=DetectorConfig)
    progress: bool = True

    def check(self) -> None:
        if self.steps < 1 or self.batch < 2:
            raise BadParameter("--steps must be >= 1 and --batch >= 2")
        if not self.fake:
            raise BadParameter("give at least one --fake folder")
        if self.augment not in RECIPES:
            raise BadParameter(f"unknown augmentation recipe '{self.augment}': pick one of {', '.join(RECIPES)}")


def split_of(samples: list[Sample], split: str) -> list[Sample]:
    return [s for s in samples if s.split == split]


def make_batch(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, idx: np.ndarray,
               rng: np.random.Generator, tile: int, device: torch.device | str = "cpu", recipe: str = "chain"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, masks in [0, 1], labels) of the augmented images at `idx`: one training batch.
    Shared with LoRA fine-tuning (`brushpen.safety.lora`), so both see the same augmentation."""
    pairs = [augment(images[i], masks[i], rng, tile, recipe) for i in idx]
    x = to_tensor(np.stack([p[0] for p in pairs])).to(device)
    m = torch.from_numpy(np.stack([p[1] for p in pairs])).float().div(255).unsqueeze(1).to(device)
    y = torch.as_tensor(np.asarray(labels)[idx], dtype=torch.float32, device=device)
    return x, m, y


def detector_loss(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor,
                  loc_weight: float) -> torch.Tensor:
    """Image BCE + loc_weight x region BCE against the mask pooled to the head's grid."""
    logit, where = model(x)
    target = F.adaptive_avg_pool2d(m, where.shape[-2:])
    return F.binary_cross_entropy_with_logits(logit, y) + \
        loc_weight * F.binary_cross_entropy_with_logits(where, target)


@torch.no_grad()
def logits_of(model: Detector, images: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [model(to_tensor(images[i:i + batch]))[0] for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_detector(cfg: TrainConfig, command: str = "", log: Callable[[str], None] = print) -> Detector:
    from accelerate import Accelerator

    cfg.check()
    samples = gather(cfg.real, cfg.fake, cfg.families, cfg.exclude, cfg.exclude_sources)
    train, val = split_of(samples, "train"), split_of(samples, "val")
    if not val:
        raise BadParameter("the data has no 'val' split to calibrate on")
    sampler = BalancedSampler(train)
    log(f"train: {sum(s.label == 0 for s in train)} real, {sum(s.label == 1 for s in train)} fake "
        f"({', '.join(sampler.families)}); val: {len(val)}")
    images, masks = load_arrays(train, cfg.model.tile)
    labels = np.array([s.label for s in train])

    torch.manual_seed(cfg.seed)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model = Detector(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt_dir, step, losses = Path(cfg.out) / "checkpoint", 0, []
    found = find_checkpoint(ckpt_dir)
    if found is not None and not cfg.resume:
        raise BadParameter(f"{ckpt_dir} holds a checkpoint: pass --resume to continue it, or remove it")
    if found is not None:
        _, scalars = load_checkpoint(found, {"model": model}, {"model": opt})
        step, losses = int(scalars["step"]), list(scalars.get("losses", []))
        log(f"resumed at step {step} from {found}")
    model, opt = acc.prepare(model, opt)
    # One-cycle cosine decay over the whole run, computed from the step so resuming needs no state.
    lr_at = lambda s: cfg.lr * 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps))

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, {"model": acc.unwrap_model(model)}, {"model": opt}, {"seed": torch.tensor([cfg.seed])},
                        {"step": step, "losses": losses[-200:]})

    start, bar = time.time(), tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, desc="detect train",
                      mininterval=0.5 if sys.stderr.isatty() else 30)
    model.train()
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        idx = sampler.batch(cfg.batch, rng)
        x, m, y = make_batch(images, masks, labels, idx, rng, cfg.model.tile, acc.device, cfg.augment)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = detector_loss(model, x, m, y, cfg.loc_weight)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        step += 1
        losses.append(round(float(loss.detach()), 4))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
        if step % cfg.snap == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    elapsed = time.time() - start

    net = acc.unwrap_model(model).cpu().eval()
    val_images, _ = load_arrays(val, cfg.model.tile)
    val_labels = np.array([s.label for s in val])
    net.calibration = calibrate(logits_of(net, val_images), val_labels, cfg.fpr, cfg.fnr)
    log(f"calibrated: T={net.calibration.temperature:.3f} t_real={net.calibration.t_real:.4f} "
        f"t_fake={net.calibration.t_fake:.4f}")
    save_detector(net, cfg.out)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    record.update(real=[str(p) for p in cfg.real], fake=[str(p) for p in cfg.fake])
    atomic_write_json(Path(cfg.out) / "train.json", {
        "config": record, "command": command, "steps": step, "families": sampler.families,
        "counts": {sp: {"real": sum(s.label == 0 for s in split_of(samples, sp)),
                        "fake": sum(s.label == 1 for s in split_of(samples, sp))} for sp in ("train", "val", "test")},
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "train_seconds_this_run": round(elapsed, 1), "params": net.num_params(), "threads": torch.get_num_threads(),
        "data_md": describe_sources(cfg.real, cfg.fake)})
    return net
