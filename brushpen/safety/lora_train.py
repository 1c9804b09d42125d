"""Fine-tuning a detector LoRA adapter (`brushpen finetune detector`, and the API's and studio's
fine-tuning jobs): teach the shipped detector a generator it has not seen, from a few examples.

**Data.** `fake` and `real` are folders (any layout `detector_data.read_any` reads: a `build-fakes`
manifest, `<split>/*.png`, or just images, of which a fixed 20% is held out for validation), or one
zip holding `fake/` and `real/` folders (unpacked with the checker's safe zip reader into the job's
work folder). Images larger than the 64 px tile give up to `TILES_PER_IMAGE` tiles (an evenly spaced
grid, as a scan reads them); smaller ones are enlarged as a scan does. `count` keeps at most that
many training images per class (a seeded draw), `families` picks fake families from a manifest.

**Replay.** The base's `train.json` names its own training folders; when they are on disk,
`replay_count` of their training images are mixed in, so a `replay` share of each batch half (real
and fake alike, the fake part spread over the base's families) is the old data. It keeps the base's
families from regressing while the adapter learns the new one; `replay 0` turns it off.

**Training.** LoRA on every conv (`brushpen.safety.lora.add_lora`, BN frozen in eval mode), AdamW on
the LoRA tensors only, cosine learning rate, the trainer's own augmentation and loss
(`detector_train.make_batch`, `detector_loss`). Plain torch rather than accelerate: the adapter is a
few thousand parameters trained in one CPU process. Resumable: a checkpoint every `snap` steps in
`$BRUSHPEN_HOME/finetune/detector/<base>-<out>/checkpoint`; the batch at step s is drawn from
(seed, s), so a resumed run sees the batches an uninterrupted one would.

**Calibration and output.** The adapter's own temperature and verdict bands are fitted on the
validation split (the user's val images plus the replay val images, so the 1% false-positive rule
rests on many real photos), stored in `adapter.json`. The adapter folder is staged and published
whole into `<base>/adapters/<out>/`; the base's files are only read.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from brushpen.adapters import AdapterInfo, FinetuneEvent, FinetuneResult, adapter_dir, check_name, weights_sha256
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.families import default_model
from brushpen.finetune_loop import run_steps
from brushpen.safety import lora
from brushpen.safety.calibrate import calibrate, roc_auc
from brushpen.safety.detector import TILE, load_detector, tile_image
from brushpen.safety.detector_data import Sample, gather, load_arrays, read_any
from brushpen.safety.detector_train import detector_loss, logits_of, make_batch
from brushpen.store import publish_dir, resolve_model, staging_dir
from brushpen.ziputil import ZipLimits, iter_zip

TILES_PER_IMAGE = 4


@dataclass
class DetectorFinetuneRequest:
    base: str = default_model("safety")              # the detector to adapt (store name or folder)
    fake: Path | None = None              # folder of AI-made images, or a zip with fake/ and real/
    real: Path | None = None              # folder of real images encoded like the fakes (or the same zip)
    out: str = ""                         # the adapter's name
    rank: int = 4
    alpha: float | None = None            # LoRA scale alpha / rank; None = rank (scale 1)
    steps: int = 200
    batch: int = 32
    lr: float = 5e-3
    count: int | None = None              # at most this many training images per class
    families: list[str] | None = None     # fake families to use from a build-fakes manifest
    replay: float = 0.5                   # share of each batch half from the base's own training data
    replay_count: int = 2000              # replay images loaded (training; as many again for validation)
    loc_weight: float = 0.5
    val_fraction: float = 0.2             # held out of a plain image folder for calibration
    snap: int = 100
    seed: int = 0
    resume: bool = False
    val_checks: bool = False              # validation AUC at every checkpoint, as an event (tuning's pruner)

    def validate(self) -> None:
        check_name(self.out)
        if self.fake is None or self.real is None:
            raise BadParameter("give --fake and --real (folders, or one zip with fake/ and real/)")
        if self.steps < 1 or self.batch < 4 or self.lr <= 0:
            raise BadParameter("--steps must be >= 1, --batch >= 4 and --lr > 0")
        if not 0.0 <= self.replay < 1.0:
            raise BadParameter(f"--replay is a share in [0, 1), got {self.replay}")
        if self.count is not None and self.count < 1:
            raise BadParameter("--count must be >= 1")


def command_of(req: DetectorFinetuneRequest) -> str:
    """The CLI command that makes this request (for the card)."""
    parts = ["brushpen", "finetune", "detector", "--base", req.base, "--fake", str(req.fake), "--real",
             str(req.real), "--out", req.out, "--rank", str(req.rank), "--steps", str(req.steps)]
    for flag, value, default in (("--count", req.count, None), ("--families", ",".join(req.families or []), ""),
                                 ("--replay", req.replay, 0.5), ("--lr", req.lr, 5e-3), ("--seed", req.seed, 0),
                                 ("--batch", req.batch, 32), ("--alpha", req.alpha, None),
                                 ("--replay-count", req.replay_count, 2000)):
        if value != default:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


# ---- data ------------------------------------------------------------------------------------------

def _unpack_zip(path: Path, dest: Path) -> Path:
    """The zip's fake/ and real/ images under dest/fake and dest/real (entries elsewhere ignored).

    `brushpen.ziputil.iter_zip` makes the entries safe (no '..', no absolute names, size and ratio
    caps counted on the bytes read) with the checker's limits; an unsafe entry is skipped."""
    if (dest / ".complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for name, data, error in iter_zip(path, ZipLimits()):
        if "!" not in name:   # the zip itself could not be read
            raise BadInput(f"{path}: {error}")
        inner = PurePosixPath(name.split("!", 1)[1]).parts
        kind = next((i for i, p in enumerate(inner) if p.lower() in ("fake", "real")), None)
        if data is None or kind is None or kind == len(inner) - 1:
            continue   # unsafe or unreadable entries, and files outside fake/ and real/, are skipped
        target = dest.joinpath(inner[kind].lower(), *inner[kind + 1:])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for kind in ("fake", "real"):
        if not (dest / kind).is_dir():
            raise BadInput(f"{path} holds no {kind}/ folder: the zip needs fake/ and real/ folders of images")
    (dest / ".complete").touch()
    return dest


def _source(path: Path, kind: str, work: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".zip" and path.is_file():
        # Keyed by content: another upload under the same adapter name never reuses stale images.
        return _unpack_zip(path, work / f"data-{weights_sha256([path])[:16]}") / kind
    if not path.is_dir():
        raise BadInput(f"--{kind} {path} is neither a folder nor a .zip file")
    return path


def user_samples(req: DetectorFinetuneRequest, work: Path) -> list[Sample]:
    fakes = [s for s in read_any(_source(req.fake, "fake", work), 1, req.val_fraction)
             if not req.families or s.family in req.families]
    reals = read_any(_source(req.real, "real", work), 0, req.val_fraction)
    out = []
    for group in (fakes, reals):
        train = [s for s in group if s.split == "train"]
        if req.count is not None and len(train) > req.count:
            keep = np.random.default_rng([req.seed, 7]).choice(len(train), req.count, replace=False)
            train = [train[i] for i in sorted(keep)]
        out += train + [s for s in group if s.split == "val"]
    for label, what in ((1, "fake"), (0, "real")):
        for split in ("train", "val"):
            if not any(s.label == label and s.split == split for s in out):
                raise BadInput(f"no {what} images for {split}: give at least 2 {what} images "
                               f"(one is held out to calibrate on){' in --families ' + ','.join(req.families) if req.families and label else ''}")
    return out


def replay_samples(base_dir: Path, limit: int, seed: int) -> list[Sample]:
    """Up to `limit` train and `limit` val images of the base's own training data, if it is on disk."""
    record = Path(base_dir) / "train.json"
    if limit <= 0 or not record.exists():
        return []
    cfg = json.loads(record.read_text(encoding="utf-8"))["config"]
    folders = [Path(p) for p in cfg.get("real", []) + cfg.get("fake", [])]
    if not cfg.get("fake") or not all(p.is_dir() for p in folders):
        return []
    families = tuple(cfg["families"]) if cfg.get("families") else None
    samples = gather([Path(p) for p in cfg.get("real", [])], [Path(p) for p in cfg["fake"]], families,
                     tuple(cfg.get("exclude") or ()))
    rng, out = np.random.default_rng([seed, 11]), []
    for split in ("train", "val"):
        pool = [s for s in samples if s.split == split]
        keep = rng.choice(len(pool), min(limit, len(pool)), replace=False) if pool else []
        out += [pool[i] for i in sorted(keep)]
    return [Sample(s.path, s.label, "replay-" + s.family, s.split, s.mask) for s in out]


def load_tiles(samples: list[Sample], tile: int = TILE) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(images, masks, owner: the index into `samples` of each tile)."""
    images, masks, owner = [], [], []
    for i, s in enumerate(samples):
        try:
            with Image.open(s.path) as im:
                im = im.convert("RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise BadInput(f"cannot read {s.path}: {e}") from e
        if im.size == (tile, tile):
            a, m = load_arrays([s], tile)
        else:
            a, _, _ = tile_image(im, tile, TILES_PER_IMAGE)
            m = np.full(a.shape[:3], 255 * s.label, np.uint8)
        images.append(a)
        masks.append(m)
        owner += [i] * len(a)
    return np.concatenate(images), np.concatenate(masks), owner


def _batch(pools: dict[str, list[np.ndarray]], size: int, replay: float, rng: np.random.Generator) -> np.ndarray:
    """Half real, half fake; within each half a `replay` share from the old data (fakes spread over
    the old families), the rest from the user's images."""
    idx = []
    for kind, n in (("real", size // 2), ("fake", size - size // 2)):
        old = pools["old_" + kind]
        n_old = int(round(replay * n)) if old else 0
        idx.append(rng.choice(pools["new_" + kind][0], n - n_old))
        fams = rng.integers(0, max(len(old), 1), n_old)
        idx.append(np.array([old[f][rng.integers(len(old[f]))] for f in fams], dtype=np.int64))
    return np.concatenate(idx).astype(np.int64)


# ---- training --------------------------------------------------------------------------------------

def finetune(req: DetectorFinetuneRequest, progress: Callable[[FinetuneEvent], None] | None = None,
             log: Callable[[str], None] = lambda m: None) -> FinetuneResult:
    """Train, calibrate and publish the adapter `<base>:<out>` (module docstring has the recipe)."""
    req.validate()
    base_dir = resolve_model(req.base, family=lora.FAMILY)
    work = get_settings().home / "finetune" / "detector" / f"{base_dir.name}-{req.out}"
    samples = user_samples(req, work)
    old = replay_samples(base_dir, req.replay_count, req.seed) if req.replay > 0 else []
    log(f"fine-tuning {base_dir.name}: {sum(s.label == 1 and s.split == 'train' for s in samples)} fake and "
        f"{sum(s.label == 0 and s.split == 'train' for s in samples)} real training images, "
        f"{sum(s.split == 'train' for s in old)} replay images")
    every = samples + old
    train = [i for i, s in enumerate(every) if s.split == "train"]
    val = [i for i, s in enumerate(every) if s.split == "val"]
    images, masks, owner = load_tiles([every[i] for i in train])
    labels = np.array([every[train[o]].label for o in owner])
    families = [every[train[o]].family for o in owner]
    is_old = np.array([f.startswith("replay-") for f in families])
    pools: dict[str, list[np.ndarray]] = {}
    for kind, label in (("real", 0), ("fake", 1)):
        pools["new_" + kind] = [np.nonzero((labels == label) & ~is_old)[0]]
        old_fams = sorted({f for f, o, y in zip(families, is_old, labels) if o and y == label})
        pools["old_" + kind] = [np.nonzero(np.array([f == fam for f in families]))[0] for fam in old_fams]

    model = load_detector(base_dir)
    targets = lora.conv_names(model)
    torch.manual_seed(req.seed)   # LoRA's down matrices start random: the same start in any process
    lora.add_lora(model, req.rank, req.alpha, targets)
    base_calibration = model.calibration
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=req.lr, weight_decay=0.0)
    torch.manual_seed(req.seed)
    lr_at = lambda s: req.lr * 0.5 * (1 + np.cos(np.pi * min(s, req.steps) / req.steps))
    state: dict = {"losses": []}

    def train_step(step: int) -> float:
        rng = np.random.default_rng([req.seed, step])   # the batch is a function of the step: exact resume
        x, m, y = make_batch(images, masks, labels, _batch(pools, req.batch, req.replay, rng), rng, TILE)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = detector_loss(model, x, m, y, req.loc_weight)   # model stays in eval mode: BN frozen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["losses"].append(round(float(loss.detach()), 4))
        return state["losses"][-1]

    val_images, _, val_owner = load_tiles([every[i] for i in val])
    val_labels = np.array([every[val[o]].label for o in val_owner])
    val_old = np.array([every[val[o]].family.startswith("replay-") for o in val_owner])

    def keep_recent(st: dict) -> None:
        st["losses"] = st["losses"][-500:]   # the messages and the final loss use the last 20
        if req.val_checks and progress is not None:
            now = logits_of(model, val_images)
            auc = {k.replace("_after", ""): v for k, v in _metrics(now, now, val_labels, val_old).items()
                   if k.endswith("_after")}
            auc["val_auc"] = float(np.mean(list(auc.values())))
            progress(FinetuneEvent(st["step"], req.steps, None,
                                   f"step {st['step']}: validation AUC {auc['val_auc']:.4f}", auc))

    start = time.time()
    run_steps(train_step, total=req.steps, every=req.snap, ckpt_dir=work / "checkpoint", resume=req.resume,
              modules={"model": model}, optimizers={"model": opt}, state=state, progress=progress,
              describe=lambda st, _: f"step {st['step']}/{req.steps}, loss {np.mean(st['losses'][-20:]):.4f}",
              on_checkpoint=keep_recent)
    step, losses = state["step"], state["losses"]
    elapsed = time.time() - start

    after = logits_of(model, val_images)
    lora.merge_lora(model)   # refuses non-finite weights before anything is published
    model.calibration = calibrate(after, val_labels)
    before = logits_of(load_detector(base_dir), val_images)
    metrics = _metrics(before, after, val_labels, val_old)
    metrics.update(steps=step, rank=req.rank, trainable_params=lora.trainable_params(model),
                   train_images={"fake": sum(s.label == 1 and s.split == "train" for s in samples),
                                 "real": sum(s.label == 0 and s.split == "train" for s in samples),
                                 "replay": sum(s.split == "train" for s in old)},
                   replay_families=sorted({s.family[len("replay-"):] for s in old if s.label == 1}),
                   final_loss=float(np.mean(losses[-20:])) if losses else None,
                   train_seconds_this_run=round(elapsed, 1), threads=torch.get_num_threads())
    info = AdapterInfo(base=f"{lora.FAMILY}/{base_dir.name}", base_sha256=lora.base_sha256(base_dir),
                       family=lora.FAMILY, rank=req.rank, trainable_params=metrics["trainable_params"],
                       targets=targets,
                       alpha=float(req.alpha if req.alpha is not None else req.rank),
                       extra={"calibration": asdict(model.calibration), "base_calibration": asdict(base_calibration),
                              "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()},
                              "command": command_of(req)})
    final = adapter_dir(base_dir, req.out)
    stage = staging_dir(final)
    lora.save_adapter(model, stage, info, _card(base_dir, req, info, metrics), metrics)
    publish_dir(stage, final)
    log(f"adapter {base_dir.name}:{req.out} -> {final}")
    return FinetuneResult(ref=f"{base_dir.name}:{req.out}", path=final, metrics=metrics)


def _metrics(before: np.ndarray, after: np.ndarray, labels: np.ndarray, old: np.ndarray) -> dict:
    """Validation AUC of the user's fakes and of the replayed old families, before and after."""
    out: dict = {}
    for name, keep in (("new", (labels == 0) | ((labels == 1) & ~old)), ("old", (labels == 0) | ((labels == 1) & old))):
        if (labels[keep] == 1).any():
            out[f"val_auc_{name}_before"] = round(roc_auc(before[keep], labels[keep]), 4)
            out[f"val_auc_{name}_after"] = round(roc_auc(after[keep], labels[keep]), 4)
    out["val_counts"] = {"real": int((labels == 0).sum()), "fake_new": int(((labels == 1) & ~old).sum()),
                         "fake_old": int(((labels == 1) & old).sum())}
    return out


def _card(base_dir: Path, req: DetectorFinetuneRequest, info: AdapterInfo, metrics: dict) -> str:
    cal = info.extra["calibration"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, dict))
    return f"""# {base_dir.name}:{req.out}: a LoRA adapter for the detector `{base_dir.name}`

A rank-{req.rank} LoRA (alpha {info.alpha:g}) on every conv of `{info.base}` ({', '.join(info.targets)}),
{info.trainable_params:,} trainable parameters; BatchNorm frozen (the base's statistics). Use it as
`{base_dir.name}:{req.out}` wherever a detector is named (`brushpen detect --model`, `POST /v1/detections`).
Base weights sha256 {info.base_sha256[:16]}...: it refuses to load on other base weights.

## Training

    {info.extra['command']}

{metrics['steps']} steps of batch {req.batch}, AdamW lr {req.lr:g} cosine, the base trainer's augmentation,
{metrics['threads']} CPU thread(s), {metrics['train_seconds_this_run']} s.
Images: {json.dumps(metrics['train_images'])} (fake and real from `{req.fake}` and `{req.real}`; replay =
the base's own training data on disk, families {', '.join(metrics['replay_families']) or 'none'}, share
{req.replay if metrics['train_images']['replay'] else 0} of each batch half).

## Calibration

Its own: T = {cal['temperature']:.4f}; `fake` if p >= {cal['t_fake']:.4f}, `real` if p < {cal['t_real']:.4f},
else `uncertain`. Fitted on {json.dumps(cal['fitted_on'])}.

## Validation figures (the validation split; "new" = the given fakes, "old" = the base's families)

| figure | value |
|---|---|
{rows}
| val counts | {json.dumps(metrics['val_counts'])} |

## Licence

Trained here from the images given; the adapter holds no image. The images keep their own licences.
"""
