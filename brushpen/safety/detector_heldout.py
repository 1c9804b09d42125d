"""The detector on what it never saw: the held-out protocol that the card leads with.

A moderator meets generators and cameras the detector was not trained on, so the figures that
matter come from models trained with something left out:
- **LOFO** (leave one family out): for each fake family F, a model trained on every other family,
  scored on F's test fakes against all test reals.
- **LOSO** (leave one source out): for each photo source S (`detector_data.photo_source`), a model
  trained without S's real patches and without the fakes made from them (decoder, SR, splice,
  inpaint and emoji fakes show S's content). It is scored on S's patches from every split, none
  of which it saw, against the test fakes not made from S. The generators that draw from noise
  (StyleGAN, diffusion, DCGAN) were trained on every source's train patches, S included: their
  fakes carry no S content, but their training saw it.

Every held-out model uses the recipe of the model it stands for (`TrainConfig`, the steps given)
and its own validation split for its thresholds. Each is scored clean and after JPEG 75 (real and
fake alike), with AUC, AP, TPR at 1% FPR and the FPR at its own `t_fake` (on the held-out reals for
LOSO, the false alarms a new camera source would raise). `summarise` gives the mean and the worst
AUC per protocol and setting; the card's headline is the mean held-out-family AUC.

A model that never trained on a fake set at all (the shipped detector against a newer set) is
scored as it is (`score_unseen`): every family is held out ("unseen set"), and reals from photo
sources outside the set, given as a `data photos` folder, against every test fake ("unseen
sources").

Models live in `DIR/family-<F>` and `DIR/source-<S>`, each resumable.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from brushpen.safety.calibrate import family_metrics
from brushpen.safety.detector import Detector, load_detector, tile_image
from brushpen.safety.detector_data import Sample, gather, load_rgb, photo_source, read_set
from brushpen.safety.detector_train import TrainConfig, logits_of, train_detector
from brushpen.safety.fake_common import write_encoded
from brushpen.safety.perturb import PERTURBATIONS

SETTINGS = ("clean", "jpeg75")
PROTOCOLS = {"family": "LOFO", "source": "LOSO"}


def held_out_names(samples: list[Sample], kind: str) -> list[str]:
    """The families (kind "family") or photo sources (kind "source") there are to leave out."""
    if kind == "family":
        return sorted({s.family for s in samples if s.label == 1})
    return sorted({src for s in samples if s.label == 0 and (src := photo_source(s))})


def train_held_out(out_dir: Path, base: TrainConfig, kind: str, names: list[str] | None = None,
                   log: Callable[[str], None] = print) -> list[Path]:
    """One model per left-out family or source, each `base` with that one left out (resumable)."""
    names = names or held_out_names(gather(base.real, base.fake, base.families), kind)
    folders = []
    for name in names:
        out = Path(out_dir) / f"{kind}-{name}"
        folders.append(out)
        done = out / "train.json"
        if done.exists() and json.loads(done.read_text())["steps"] >= base.steps:
            continue
        leave = {"exclude": (*base.exclude, name)} if kind == "family" else {"exclude_sources": (name,)}
        log(f"{PROTOCOLS[kind]}: training without {name} for {base.steps} steps -> {out}")
        cfg = replace(base, out=out, resume=True, progress=False, **leave)
        train_detector(cfg, command=f"held out: {kind} {name}", log=log)
    return folders


class ImageCache:
    """Each test image, clean or perturbed, loaded once for all the held-out models."""

    def __init__(self, tile: int):
        self.tile, self.arrays = tile, {}

    def get(self, samples: list[Sample], setting: str) -> np.ndarray:
        out = []
        for s in samples:
            key = (s.path, setting)
            if key not in self.arrays:
                self.arrays[key] = self._load(s.path, setting)
            out.append(self.arrays[key])
        return np.stack(out)

    def _load(self, path: Path, setting: str) -> np.ndarray:
        if setting == "clean":
            return load_rgb(path, self.tile)
        with Image.open(path) as im:
            tiles, _, _ = tile_image(PERTURBATIONS[setting](im.convert("RGB")), self.tile)
        return tiles[0]


def scoring_set(samples: list[Sample], kind: str, name: str) -> list[Sample]:
    """The images a model without `name` is scored on (module docstring)."""
    if kind == "family":
        return [s for s in samples if s.split == "test" and (s.label == 0 or s.family == name)]
    reals = [s for s in samples if s.label == 0 and photo_source(s) == name]
    return reals + [s for s in samples if s.split == "test" and s.label == 1 and photo_source(s) != name]


def score_held_out(model: Detector, test: list[Sample], cache: ImageCache, settings=SETTINGS) -> dict:
    """{setting: metrics} of one held-out model on its test pair."""
    labels = np.array([s.label for s in test])
    out = {}
    for setting in settings:
        p = model.calibration.probability(logits_of(model, cache.get(test, setting)))
        m = family_metrics(p, labels, model.calibration.t_fake)
        m["fpr_at_t_fake"] = float(np.mean(p[labels == 0] >= model.calibration.t_fake))
        out[setting] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
    return out


def evaluate_held_out(out_dir: Path, real: list[Path], fake: list[Path], settings=SETTINGS) -> list[dict]:
    """Rows {protocol, held_out, steps, <setting>: metrics} for every model in `out_dir`."""
    samples = gather(real, fake)
    rows, cache = [], None
    for folder in sorted(p for p in Path(out_dir).iterdir() if (p / "config.json").exists() and "-" in p.name):
        kind, name = folder.name.split("-", 1)
        if kind not in PROTOCOLS:
            continue
        model = load_detector(folder)
        cache = cache or ImageCache(model.config.tile)
        test = scoring_set(samples, kind, name)
        if not any(s.label == 0 for s in test) or not any(s.label == 1 for s in test):
            continue
        train = json.loads((folder / "train.json").read_text())
        rows.append({"protocol": PROTOCOLS[kind], "held_out": name, "steps": train["steps"],
                     **score_held_out(model, test, cache, settings)})
    return rows


def unseen_reals(folder: Path) -> list[Sample]:
    """Every patch of a `data photos` folder (all splits: none was trained on), re-encoded once as
    build-fakes encodes its reals (`fake_common.write_encoded`, seeded by the path), cached beside it."""
    encoded = Path(folder) / ".encoded"
    out = []
    for s in read_set(folder, 0):
        rel = f"real/{s.split}/{s.path.name}"
        if not (encoded / rel).is_file():
            with Image.open(s.path) as im:
                write_encoded(encoded, rel, im.convert("RGB"), 0)
        out.append(Sample(encoded / rel, 0, "real", "test", source=s.source))
    return out


def score_unseen(model: Detector, samples: list[Sample], unseen_real: Path | None = None,
                 cache: ImageCache | None = None, steps: int = 0) -> list[dict]:
    """Rows for a model scored as it is: each family of `samples` against all test reals
    ("unseen set"), and the reals of `unseen_real` against every test fake ("unseen sources")."""
    cache = cache or ImageCache(model.config.tile)
    rows = [{"protocol": "unseen set", "held_out": fam, "steps": steps,
             **score_held_out(model, scoring_set(samples, "family", fam), cache)}
            for fam in held_out_names(samples, "family")]
    if unseen_real:
        test = unseen_reals(unseen_real) + [s for s in samples if s.split == "test" and s.label == 1]
        rows.append({"protocol": "unseen sources", "held_out": "all", "steps": steps,
                     **score_held_out(model, test, cache)})
    return rows


def summarise(rows: list[dict], settings=SETTINGS) -> dict:
    """{protocol: {setting: {mean_auc, min_auc, worst, mean_ap, mean_tpr_at_1fpr, n}}}."""
    out: dict = {}
    for protocol in sorted({r["protocol"] for r in rows}):
        mine = [r for r in rows if r["protocol"] == protocol]
        out[protocol] = {}
        for setting in settings:
            auc = [r[setting]["auc"] for r in mine if setting in r]
            if not auc:
                continue
            worst = min((r for r in mine if setting in r), key=lambda r: r[setting]["auc"])
            out[protocol][setting] = {
                "mean_auc": round(float(np.mean(auc)), 4), "min_auc": round(min(auc), 4),
                "worst": worst["held_out"], "n": len(auc),
                "mean_ap": round(float(np.mean([r[setting]["ap"] for r in mine if setting in r])), 4),
                "mean_tpr_at_1fpr": round(float(np.mean([r[setting]["tpr_at_1fpr"] for r in mine
                                                         if setting in r])), 4)}
    return out


def held_out_markdown(rows: list[dict], settings=SETTINGS) -> str:
    """One table per protocol: a row per held-out family or source, its mean last."""
    parts = []
    for protocol in sorted({r["protocol"] for r in rows}):
        mine = sorted((r for r in rows if r["protocol"] == protocol), key=lambda r: r["held_out"])
        head = "| held out | " + " | ".join(f"AUC {s} | AP {s} | TPR@1%FPR {s} | FPR@t_fake {s}" for s in settings)
        budget = f"{mine[0]['steps']} steps per model" if mine[0]["steps"] else "the model as it is"
        lines = [f"**{protocol}** ({budget})", "", head + " | real | fake |",
                 "|---" * (1 + 4 * len(settings) + 2) + "|"]
        for r in mine:
            cells = " | ".join(f"{r[s]['auc']:.4f} | {r[s]['ap']:.4f} | {r[s]['tpr_at_1fpr']:.4f} | "
                               f"{r[s]['fpr_at_t_fake']:.4f}" for s in settings)
            first = r[settings[0]]
            lines.append(f"| {r['held_out']} | {cells} | {first['n_real']} | {first['n_fake']} |")
        avg = lambda s, k: np.mean([r[s][k] for r in mine])  # noqa: E731
        mean = " | ".join(f"**{avg(s, 'auc'):.4f}** | {avg(s, 'ap'):.4f} | {avg(s, 'tpr_at_1fpr'):.4f} | "
                          f"{avg(s, 'fpr_at_t_fake'):.4f}" for s in settings)
        lines.append(f"| mean | {mean} | | |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def headline(summary: dict) -> str:
    """The card's first line on quality: the mean held-out-family AUC, clean and after JPEG 75."""
    lofo = summary.get("LOFO") or summary.get("unseen set", {})
    if "clean" not in lofo:
        return "not measured yet (`brushpen detect eval --lofo-steps N`)"
    text = f"mean held-out-family AUC **{lofo['clean']['mean_auc']:.3f}** clean"
    if "jpeg75" in lofo:
        text += f", **{lofo['jpeg75']['mean_auc']:.3f}** after JPEG 75"
    text += (f"; worst family {lofo['clean']['worst']} at {lofo['clean']['min_auc']:.3f} "
             f"(over {lofo['clean']['n']} families)")
    loso = summary.get("LOSO", {}).get("clean")
    if loso:
        text += f"; mean held-out-source AUC {loso['mean_auc']:.3f} (worst {loso['worst']} {loso['min_auc']:.3f})"
    unseen = summary.get("unseen sources", {}).get("clean")
    if unseen:
        text += f"; reals from unseen photo sources against every test fake: AUC {unseen['mean_auc']:.3f}"
    return text
