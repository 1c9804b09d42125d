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

import json
import shutil
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
from brushpen.adapters import FinetuneEvent
from brushpen.errors import BadInput, BadParameter
from brushpen.safety.calibrate import calibrate, roc_auc
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
    # a torch detector may sit on a device (a checkpoint during training); edge backends take CPU tensors
    params = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = params.device if params is not None else torch.device("cpu")
    out = []
    for i in range(0, len(images), batch):
        logit = model(to_tensor(images[i:i + batch]).to(device) if device.type != "cpu" else
                      to_tensor(images[i:i + batch]))[0]
        out.append(logit.cpu() if device.type != "cpu" else logit)
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_detector(cfg: TrainConfig, command: str = "", log: Callable[[str], None] = print,
                   progress: Callable[[FinetuneEvent], None] | None = None) -> Detector:
    """Train, calibrate and save `cfg.out`. With `progress`, the validation AUC is measured at every
    checkpoint and sent as an event (`metrics["val_auc"]`, what tuning's pruner reads); a raising
    callback stops the run after that checkpoint."""
    from accelerate import Accelerator

    cfg.check()
    samples = gather(cfg.real, cfg.fake, cfg.families, cfg.exclude, cfg.exclude_sources)
    train, val = split_of(samples, "train"), split_of(samples, "val")
    if not val:
        raise BadParameter("the data has no 'val' split to calibrate on")
    val_images, _ = load_arrays(val, cfg.model.tile)
    val_labels = np.array([s.label for s in val])
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
            if progress is not None:
                auc = roc_auc(logits_of(acc.unwrap_model(model), val_images), val_labels)
                if not np.isfinite(losses[-1]):
                    raise BadInput(f"the training loss is not finite at step {step}")
                progress(FinetuneEvent(step, cfg.steps, float(np.mean(losses[-50:])),
                                       f"step {step}: validation AUC {auc:.4f}", {"val_auc": auc}))
                model.train()
    bar.close()
    elapsed = time.time() - start

    net = acc.unwrap_model(model).cpu().eval()
    val_logits = logits_of(net, val_images)
    net.calibration = calibrate(val_logits, val_labels, cfg.fpr, cfg.fnr)
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
        "val_auc": round(roc_auc(val_logits, val_labels), 4),
        "train_seconds_this_run": round(elapsed, 1), "params": net.num_params(), "threads": torch.get_num_threads(),
        "data_md": describe_sources(cfg.real, cfg.fake)})
    return net


@dataclass
class DetectorTrainRequest:
    """A base detector trained from scratch into the store as `safety/OUT` (`brushpen tune
    detector-train`): the knobs of `TrainConfig` that tuning moves, with the shipped recipe's values."""

    fake: Path | None = None              # a build-fakes set (its manifest's families)
    real: Path | None = None              # reals encoded like the fakes (default: the manifest's real rows)
    out: str = ""                         # the model's name in the store
    families: str | None = None           # comma list of fake families (default: all in the set)
    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    width: float = 1.0                    # x the shipped stage widths 24,32,32,64,64
    augment: str = "chain"                # detector_data.RECIPES
    loc_weight: float = 0.5
    snap: int = 250
    seed: int = 0
    resume: bool = False

    def validate(self) -> None:
        from brushpen.adapters import check_name

        check_name(self.out)
        if self.fake is None:
            raise BadParameter("give --fake (a build-fakes set)")
        if self.steps < 1 or self.batch < 2 or self.lr <= 0 or self.snap < 1:
            raise BadParameter("--steps and --snap must be >= 1, --batch >= 2 and --lr > 0")
        if not 0.25 <= self.width <= 4.0:
            raise BadParameter(f"--width is a multiple of the shipped widths in 0.25..4, got {self.width}")
        if self.augment not in RECIPES:
            raise BadParameter(f"unknown augmentation recipe '{self.augment}': pick one of {', '.join(RECIPES)}")

    def config(self, out: Path) -> TrainConfig:
        widths = tuple(max(4, round(w * self.width)) for w in DetectorConfig().widths)
        families = tuple(f.strip() for f in (self.families or "").split(",") if f.strip()) or None
        return TrainConfig(out=out, real=[Path(self.real)] if self.real else [], fake=[Path(self.fake)],
                           families=families, augment=self.augment, steps=self.steps, batch=self.batch, lr=self.lr,
                           loc_weight=self.loc_weight, seed=self.seed, snap=self.snap, resume=self.resume,
                           model=DetectorConfig(widths=widths), progress=False)

    def command(self) -> str:
        parts = ["brushpen", "detect", "train", "--fake", str(self.fake), "--out", f"weights/safety/{self.out}"]
        parts += ["--real", str(self.real)] if self.real else []
        parts += ["--families", self.families] if self.families else []
        widths = self.config(Path(self.out)).model.widths
        return " ".join(parts + ["--steps", str(self.steps), "--batch", str(self.batch), "--lr", f"{self.lr:g}",
                                 "--widths", ",".join(map(str, widths)), "--augment", self.augment,
                                 "--loc-weight", f"{self.loc_weight:g}", "--snap", str(self.snap),
                                 "--seed", str(self.seed)])


def model_dir(name: str) -> Path:
    """Where `train_request` writes the model `name`: the store's `safety/NAME`."""
    from brushpen.config import get_settings

    return get_settings().weights / "safety" / name


def train_request(req: DetectorTrainRequest, progress: Callable[[FinetuneEvent], None] | None = None):
    """Train the detector `req` describes into the store (validation AUC at every checkpoint as an
    event); a finished model keeps no checkpoint. Returns a `FinetuneResult` whose ref is the name."""
    from brushpen.adapters import FinetuneResult
    from brushpen.store import atomic_write_text

    req.validate()
    folder = model_dir(req.out)
    if (folder / "model.safetensors").exists() and not req.resume:
        raise BadParameter(f"the store already holds a detector '{req.out}': pick another --out")
    t0 = time.time()
    net = train_detector(req.config(folder), command=req.command(), log=lambda m: None, progress=progress)
    record = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    metrics = {"val_auc": record["val_auc"], "steps": record["steps"], "params": net.num_params(),
               "widths": list(net.config.widths), "train_seconds": round(time.time() - t0, 1)}
    atomic_write_json(folder / "metrics.json", metrics)
    atomic_write_text(folder / "card.md", (
        f"# {req.out}: a detector trained by brushpen\n\n{net.num_params():,} parameters, widths "
        f"{','.join(map(str, net.config.widths))}; {record['steps']} steps of batch {req.batch}, lr {req.lr:g}, "
        f"augmentation `{req.augment}`, localisation weight {req.loc_weight:g}, seed {req.seed}, on the families "
        f"{', '.join(record['families'])}. Validation AUC **{record['val_auc']:.4f}**.\n\n    {req.command()}\n\n"
        "Licence: as the data it was trained on (`train.json`, `data_md`).\n"))
    return FinetuneResult(ref=req.out, path=folder, metrics=metrics)
