"""`finetune`: adapt a shipped GAN to a few of your own images, on the ordinary StyleGAN2 trainer.

Three modes share the data, the trainer (adaptive augmentation, EMA, resume, snapshots) and the
architecture of the base:
- `lora`   : start from the base, train only LoRA matrices in G (`gan/lora.py`), write an adapter
             to `weights/gan/<base>/adapters/NAME/` (served as `<base>:NAME`);
- `full`   : start from the base, train every weight, write an ordinary model folder;
- `scratch`: the base's architecture at random initialisation, same data: the baseline.
Freeze-D (`freeze_d`) fixes the discriminator's first blocks in `lora` and `full`. The data is an
image folder or a .zip (unpacked safely under `$BRUSHPEN_HOME/finetune/`); its labels must use the
base's class names, and unlabelled images on a class-conditional base are spread over its
classes in turn, so every class moves to the new domain.
"""

from __future__ import annotations

import io
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from brushpen.adapters import FinetuneEvent, FinetuneResult, adapter_dir, check_name, split_ref
from brushpen.checkpoint import start_or_resume
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.families import default_model
from brushpen.gan.data import ImageDataset, load_image_folder
from brushpen.gan.lora import apply_lora, save_adapter, trainable_parameters
from brushpen.gan.networks import StyleGANGenerator
from brushpen.gan.snapshot import sample_grid, write_store_model
from brushpen.gan.trainer import EMA_KIMG_PER_32, TrainConfig, Trainer
from brushpen.store import resolve_model, store_root
from brushpen.ziputil import unpack_zip

MODES = ("lora", "full", "scratch")


def start_from_base(base: Path, rank: int, alpha: float | None, freeze_d: int) -> Callable[[Trainer], None]:
    """The trainer's `start` hook for a fine-tune. G from the base's store weights (what an adapter
    is applied to at serving time), D from the base's training checkpoint when it kept one; then
    LoRA on G (rank > 0) and Freeze-D (D's fromRGB and first `freeze_d` blocks stay fixed)."""

    def start(tr: Trainer) -> None:
        tr.G.load_state_dict(StyleGANGenerator.from_pretrained(base).state_dict())
        d_file = base / "checkpoint" / "D.safetensors"
        if d_file.exists():
            tr.D.load_state_dict(load_file(str(d_file)))
        elif tr.acc.is_main_process:
            tr.log(f"{base.name} kept no discriminator ({d_file}): D starts at random")
        if rank > 0:
            apply_lora(tr.G, rank, alpha, seed=tr.cfg.seed)
        if not 0 <= freeze_d <= len(tr.D.blocks):
            raise BadParameter(f"freeze_d must lie in 0..{len(tr.D.blocks)} (D's blocks)")
        if freeze_d:
            tr.d_frozen = [tr.D.from_rgb, *tr.D.blocks[:freeze_d]]
            for module in tr.d_frozen:
                module.requires_grad_(False)
        if tr.acc.is_main_process:
            tr.log(f"fine-tuning {base.name}: {trainable_parameters(tr.G):,} trainable G parameters, "
                   f"{trainable_parameters(tr.D):,} trainable D parameters")

    return start


@dataclass
class GanFinetuneRequest:
    base: str = default_model("gan")
    data: Path | str = ""           # an image folder or a .zip of images
    out: str = ""                   # the adapter name (lora), or a model name or folder (full, scratch)
    mode: str = "lora"
    rank: int = 4
    alpha: float | None = None      # LoRA scale = alpha / rank; None = rank
    kimg: float = 2.0               # thousands of real images shown
    freeze_d: int = 0               # Freeze-D: D's fromRGB and first K blocks stay fixed (lora, full)
    batch: int = 16
    lr: float = 0.0025
    # G at D's rate: on the Noto faces it adapts (FID 250 -> 193 in 8 kimg) where 0.0005 barely moves
    # (BENCHMARKS "LoRA fine-tuning: GAN"); 0.0005 only helped on the mixed target, where nothing adapts.
    lr_g: float | None = None       # G's lr; None = lr
    augment: str = "ada"
    augment_p: float = 0.0          # initial (ada) or constant (fixed) augmentation probability
    # `gan train`'s 100 kimg lets p reach only ~0.04 in a few-kimg fine-tune; 2 lets it reach ~0.6.
    ada_kimg: float = 2.0           # ADA's p can go 0 -> 1 in this many kimg
    ema_kimg: float | None = None   # G_ema half-life in kimg; None = the trainer's default
    ema_rampup: float | None = 0.05  # early on, half-life <= rampup * images seen; None = off
    r1_gamma: float | None = None   # None = the trainer's heuristic
    seed: int = 0
    snapshot_kimg: float = 1.0
    resume: bool = False
    threads: int | None = None

    def validate(self) -> None:
        if self.mode not in MODES:
            raise BadParameter(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if not 1 <= self.rank <= 64:
            raise BadParameter(f"rank must lie in 1..64, got {self.rank}")
        if not 0 < self.kimg <= 10_000:
            raise BadParameter(f"kimg must lie in (0, 10000], got {self.kimg}")
        if not 1 <= self.batch <= 1024 or self.freeze_d < 0:
            raise BadParameter("batch must lie in 1..1024 and freeze_d be >= 0")
        if not str(self.out):
            raise BadParameter("name the result with out (the adapter or model name)")
        if self.mode == "lora":
            check_name(self.out)


def work_dir(req: GanFinetuneRequest, base: str) -> Path:
    """Checkpoints and unpacked data of a run; outside the store, so only results are committed."""
    return get_settings().home / "finetune" / "gan" / base / f"{req.mode}-{Path(str(req.out)).name}"


def prepare_data(data: Path | str, work: Path) -> Path:
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".zip":
        return unpack_zip(path, work / "data")
    if not path.is_dir():
        raise BadInput(f"training data not found: {path} (give an image folder or a .zip)")
    return path


def fit_labels(data: ImageDataset, class_names: list[str]) -> ImageDataset:
    """Put the data's labels in the base's class order."""
    if not class_names:
        data.labels, data.class_names = None, []
        return data
    if data.labels is None:   # unlabelled: each class gets its share, so all of them adapt
        data.labels = torch.arange(len(data)) % len(class_names)
    else:
        unknown = sorted(set(data.class_names) - set(class_names))
        if unknown:
            raise BadInput(f"the data's classes {unknown} are not among the base's: {', '.join(class_names)}")
        remap = torch.tensor([class_names.index(c) for c in data.class_names])
        data.labels = remap[data.labels]
    data.class_names = list(class_names)
    return data


def _command(req: GanFinetuneRequest) -> str:
    args = ["brushpen", "finetune", "gan", "--base", req.base, "--data", str(req.data), "--out", str(req.out),
            "--mode", req.mode, "--kimg", f"{req.kimg:g}", "--freeze-d", str(req.freeze_d), "--batch", str(req.batch)]
    if req.mode == "lora":
        args += ["--rank", str(req.rank)]
    args += ["--lr", f"{req.lr:g}", "--lr-g", f"{req.lr_g if req.lr_g is not None else req.lr:g}",
             "--ada-kimg", f"{req.ada_kimg:g}"]
    return shlex.join(args)


def _adapter_card(req: GanFinetuneRequest, data: Path, source: str, metrics: dict) -> str:
    return (f"# {req.base}:{req.out}\n\nA rank-{req.rank} LoRA adapter of the GAN `{req.base}`, trained with "
            f"`brushpen finetune gan` (LoRA on the modulated convs, their affine layers and the mapping "
            f"network; Freeze-D {req.freeze_d}).\n\n- Data: {source} (`{data}`)\n- Command: `{_command(req)}`\n"
            f"- Metrics at write time: `{json.dumps(metrics, sort_keys=True)}` (see metrics.json)\n"
            f"- Licence: that of the training data.\n- Use: `brushpen image generate --model {req.base}:{req.out}`\n")


def finetune(req: GanFinetuneRequest, progress: Callable[[FinetuneEvent], None] | None = None,
             log: Callable[[str], None] | None = None,
             on_snapshot: Callable[[Trainer], None] | None = None) -> FinetuneResult:
    """Train as the request says; returns the result's model reference, folder and last metrics.

    `log` gets the trainer's lines (kimg, sec/kimg, losses, p); by default they are printed when
    no `progress` callback is given and dropped when one is. `on_snapshot(trainer)` runs after
    each snapshot is written (the benchmark scores `trainer.G_ema` there)."""
    req.validate()
    base_name, adapter = split_ref(req.base)
    if adapter is not None:
        raise BadParameter("fine-tune a base model, not an adapter: drop the ':NAME'")
    base_dir = resolve_model(base_name, family="gan")
    base_cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    work = work_dir(req, base_dir.name)
    data_dir = prepare_data(req.data, work)
    class_names = list(base_cfg.get("class_names") or [])
    data = fit_labels(load_image_folder(data_dir, base_cfg["resolution"], use_labels=True), class_names)
    spec = data_dir / "dataset.json"
    source = json.loads(spec.read_text(encoding="utf-8")).get("source", "") if spec.exists() else ""

    if req.mode == "lora":
        out = adapter_dir(base_dir, req.out)
    else:
        out = Path(req.out) if ("/" in str(req.out) or Path(str(req.out)).is_absolute()) \
            else store_root() / "gan" / str(req.out)
        if out.resolve() == base_dir.resolve():
            raise BadParameter("the output would overwrite the base model: pick another --out")
    resume = start_or_resume(work / "checkpoint", req.resume) is not None
    cfg = TrainConfig(data=data_dir, out=work if req.mode == "lora" else out,
                      resolution=base_cfg["resolution"], kimg=req.kimg, batch=req.batch,
                      channels=base_cfg.get("channels"), z_dim=base_cfg["z_dim"], w_dim=base_cfg["w_dim"],
                      mapping_layers=base_cfg["mapping_layers"], cond=bool(class_names),
                      lr=req.lr, lr_g=req.lr_g,
                      augment=req.augment, augment_p=req.augment_p, ada_kimg=req.ada_kimg,
                      ema_kimg=req.ema_kimg if req.ema_kimg is not None else EMA_KIMG_PER_32,
                      ema_rampup=req.ema_rampup, r1_gamma=req.r1_gamma, seed=req.seed, snapshot_kimg=req.snapshot_kimg,
                      tick_kimg=min(1.0, req.kimg), resume=resume, threads=req.threads,
                      checkpoint_dir=work / "checkpoint")
    last: dict = {}
    # samples.png shows the classes the target set uses (a set of faces: faces only)
    sample_classes = sorted(set(data.labels.tolist())) if data.labels is not None else None

    def write_adapter(tr: Trainer) -> None:
        png = io.BytesIO()
        sample_grid(tr.G_ema, classes=sample_classes).save(png, format="PNG")
        last.update({"kimg": round(tr.nimg / 1000, 3), "train_seconds": round(tr.train_seconds, 1),
                     "sec_per_kimg": round(tr.train_seconds / max(tr.nimg / 1000, 1e-9), 1),
                     "augment_p": round(tr.ada.p, 4), "num_train_images": len(tr.data),
                     "freeze_d": req.freeze_d})
        save_adapter(tr.G_ema, out, base_dir, base_dir.name, last, _adapter_card(req, data_dir, source, last),
                     png.getvalue(), extra={"command": _command(req), "data": str(data_dir), "source": source})

    def on_step(nimg: int, total: int, stats: dict) -> None:
        if progress is not None:
            progress(FinetuneEvent(step=nimg, total=total, loss=stats.get("loss_G"),
                                   message=f"kimg {nimg / 1000:.3f}/{total / 1000:g}, loss_G {stats.get('loss_G', 0):.3f}, "
                                           f"loss_D {stats.get('loss_D', 0):.3f}, p {stats.get('augment_p', 0):.3f}",
                                   metrics={k: float(v) for k, v in stats.items() if k != "loss_G"}))

    def write_model(tr: Trainer) -> None:
        if req.mode == "lora":
            write_adapter(tr)
        else:
            write_store_model(tr.G_ema, Path(tr.cfg.out), tr.cfg, tr.nimg, tr.train_seconds, len(tr.data), tr.ada.p,
                              sample_classes=sample_classes)
        if on_snapshot is not None:
            on_snapshot(tr)

    trainer = Trainer(cfg, dataset=data, log=log or ((lambda msg: None) if progress else None),
                      write_model=write_model, progress=on_step,
                      start=None if req.mode == "scratch" else
                      start_from_base(base_dir, req.rank if req.mode == "lora" else 0, req.alpha, req.freeze_d))
    result = trainer.run()
    result["trainable_params_G"] = trainable_parameters(trainer.G)
    if req.mode == "lora":
        result.update(last)
        return FinetuneResult(ref=f"{base_dir.name}:{req.out}", path=out, metrics=result)
    return FinetuneResult(ref=str(out) if "/" in str(req.out) else str(req.out), path=out, metrics=result)
