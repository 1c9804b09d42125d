"""Federated training of the checker, the site side: each site's images, its local training and its
validation, with no network code (the Flower glue is `federated_flower.py`).

A site holds `real/` and `fake/` images (or a build-fakes set) that never leave it. Per round it
loads the global weights, trains the detector for `local_steps` steps on its own balanced, augmented
batches (the same batches, loss and augmentation as `brushpen detect train`), and sends the weights
back; FedProx adds `mu/2 * ||w - w_global||^2` to its loss. It scores the global weights on its own
validation split. `partition` splits one data set into sites for simulations: IID, by fake family
(each site sees only some generators) or by real-photo source (with the fakes made from them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from brushpen.errors import BadInput, BadParameter
from brushpen.safety.calibrate import roc_auc
from brushpen.safety.detector import Detector, DetectorConfig
from brushpen.safety.detector_data import BalancedSampler, Sample, gather, load_arrays, photo_source, read_any
from brushpen.safety.detector_train import detector_loss, logits_of, make_batch, split_of

PARTITIONS = ("iid", "by-family", "by-source")


@dataclass
class LocalConfig:
    """A site's local training: the knobs of `brushpen detect train` that a round uses."""

    batch: int = 32
    lr: float = 2e-3
    loc_weight: float = 0.5
    augment: str = "chain"
    seed: int = 0
    model: DetectorConfig = field(default_factory=DetectorConfig)


def site_samples(data: Path) -> list[Sample]:
    """A site's images: a build-fakes set (its manifest's splits), or `real/` and `fake/` folders of
    any images (a fixed fifth held out for validation); sub-folders of `fake/` (`fake/GENERATOR/`)
    are its families."""
    data = Path(data)
    if (data / "manifest.jsonl").exists():
        return gather([], [data])
    if not (data / "real").is_dir() or not (data / "fake").is_dir():
        raise BadInput(f"{data} holds neither a build-fakes set (manifest.jsonl) nor real/ and fake/ folders")
    fake = data / "fake"
    subs = sorted(p for p in fake.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in fake.iterdir() if p.is_file() and not p.name.startswith(".")]
    if subs and not loose and not any((fake / split).is_dir() for split in ("train", "val", "test")):
        fakes = [s for sub in subs for s in read_any(sub, 1)]
    else:
        fakes = read_any(fake, 1)
    return read_any(data / "real", 0) + fakes


def _order(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def partition(samples: list[Sample], sites: int, how: str, seed: int = 0) -> list[list[Sample]]:
    """Split the train and val samples into `sites` disjoint sites (the test split stays out: it is
    the central held-out set).

    - iid: the samples of each split and label dealt round robin in a seeded hash order of their files.
    - by-family: the fake families dealt round robin (a site sees only its own generators); reals IID.
    - by-source: real photos grouped by source (`photo_source`) and the groups dealt round robin; a
      fake follows the photo it was made from, a fake drawn from noise goes IID."""
    if how not in PARTITIONS:
        raise BadParameter(f"unknown partition '{how}': pick one of {', '.join(PARTITIONS)}")
    if sites < 1:
        raise BadParameter("--sites must be >= 1")
    pool = [s for s in samples if s.split in ("train", "val")]
    families = sorted({s.family for s in pool if s.label == 1})
    sources = sorted({photo_source(s) for s in pool if photo_source(s) is not None})
    if how == "by-family" and len(families) < sites:
        raise BadParameter(f"by-family needs at least one fake family per site: {len(families)} for {sites} sites")
    if how == "by-source" and len(sources) < sites:
        raise BadParameter(f"by-source needs at least one photo source per site: {len(sources)} for {sites} sites")
    out: list[list[Sample]] = [[] for _ in range(sites)]
    spread: dict[tuple[str, int], list[Sample]] = {}   # the samples dealt IID, by split and label
    for s in pool:
        if how == "by-family" and s.label == 1:
            out[families.index(s.family) % sites].append(s)
        elif how == "by-source" and photo_source(s) is not None:
            out[sources.index(photo_source(s)) % sites].append(s)
        else:
            spread.setdefault((s.split, s.label), []).append(s)
    # Dealt round robin in a seeded hash order, not hashed one by one: every site gets an equal share
    # of each split's reals and fakes, so a small upload does not leave a site without any by chance.
    for group in spread.values():
        for k, s in enumerate(sorted(group, key=lambda s: _order(str(s.path), seed))):
            out[k % sites].append(s)
    for i, site in enumerate(out):
        for split in ("train", "val"):
            labels = {s.label for s in site if s.split == split}
            if labels != {0, 1}:
                raise BadInput(f"site {i} has no {'real' if 0 not in labels else 'fake'} images in its {split} "
                               f"split under '{how}': use fewer sites or another partition")
    return out


def weight_names(model: Detector) -> list[str]:
    """What a site sends: every parameter and BatchNorm statistic, in a fixed order (the step
    counters stay local)."""
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


def get_weights(model: Detector) -> list[np.ndarray]:
    state = model.state_dict()
    return [state[k].detach().cpu().numpy().copy() for k in weight_names(model)]


def set_weights(model: Detector, weights: list[np.ndarray]) -> None:
    names = weight_names(model)
    if len(weights) != len(names):
        raise BadInput(f"the global model has {len(weights)} tensors where this detector has {len(names)}")
    state = model.state_dict()
    for k, w in zip(names, weights):
        if tuple(w.shape) != tuple(state[k].shape):
            raise BadInput(f"tensor {k}: shape {tuple(w.shape)} where the detector has {tuple(state[k].shape)}")
        state[k] = torch.from_numpy(np.asarray(w)).to(state[k].dtype)
        if k.endswith("running_var"):   # DP noise on the aggregate can push a variance below zero
            state[k] = state[k].clamp_min(1e-5)
    model.load_state_dict(state)


class Site:
    """One site's data and detector: `fit` a round of local steps, `evaluate` on its validation split."""

    def __init__(self, samples: list[Sample], cfg: LocalConfig, name: str = "site"):
        self.cfg, self.name = cfg, name
        train, val = split_of(samples, "train"), split_of(samples, "val")
        for split, part in (("train", train), ("val", val)):
            if {s.label for s in part} != {0, 1}:
                raise BadInput(f"site {name}: its {split} split needs both real and fake images")
        self.images, self.masks = load_arrays(train, cfg.model.tile)
        self.labels = np.array([s.label for s in train])
        self.sampler = BalancedSampler(train)
        self.val_images, _ = load_arrays(val, cfg.model.tile)
        self.val_labels = np.array([s.label for s in val])
        self.families = self.sampler.families
        torch.manual_seed(cfg.seed)
        self.model = Detector(cfg.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        self.steps_done = 0
        self.last_seen = 0.0   # when the server last sent work (run_site's patience counts from it)

    @property
    def n_train(self) -> int:
        return len(self.labels)

    def fit(self, weights: list[np.ndarray], steps: int, proximal_mu: float = 0.0) -> tuple[list[np.ndarray], float]:
        """`steps` local steps from the global `weights`; returns the new weights and the mean loss."""
        set_weights(self.model, weights)
        anchor = [p.detach().clone() for p in self.model.parameters()] if proximal_mu > 0 else None
        self.model.train()
        losses = []
        for _ in range(steps):
            rng = np.random.default_rng([self.cfg.seed, int(_order(self.name, 0), 16) % 2**31, self.steps_done])
            idx = self.sampler.batch(self.cfg.batch, rng)
            x, m, y = make_batch(self.images, self.masks, self.labels, idx, rng, self.cfg.model.tile,
                                 recipe=self.cfg.augment)
            loss = detector_loss(self.model, x, m, y, self.cfg.loc_weight)
            if anchor is not None:
                loss = loss + proximal_mu / 2 * sum(((p - a) ** 2).sum()
                                                    for p, a in zip(self.model.parameters(), anchor))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.steps_done += 1
            losses.append(float(loss.detach()))
        return get_weights(self.model), float(np.mean(losses)) if losses else float("nan")

    def evaluate(self, weights: list[np.ndarray]) -> dict[str, float]:
        """The global weights on this site's validation split: AUC and mean BCE of the image logit."""
        set_weights(self.model, weights)
        logits = logits_of(self.model, self.val_images)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(logits), torch.from_numpy(self.val_labels.astype(np.float32)))
        return {"auc": roc_auc(logits, self.val_labels), "loss": float(loss), "n": len(self.val_labels)}
