"""Evaluating the detector (`brushpen detect eval`) and writing its model card.

Protocol (every figure in the table carries its setting's name):
- Test split only: no photo behind a test patch is in train or val (`data photos` splits by photo;
  decoder and splice fakes inherit their host patch's split). Each family's fakes are scored
  against ALL test reals.
- `in-distribution`: the model trained on every family, on the clean test images.
- `jpeg75`, `resize0.5`, `resize0.5+jpeg75`: the same test images, real and fake alike, through
  `brushpen.safety.perturb` first, then scored as a scan would (a 32 px image is enlarged to 64).
- Held out (`brushpen.safety.detector_heldout`, which the card leads with): LOFO and LOSO models,
  each trained without one family or one photo source, scored clean and after JPEG 75.
Metrics per row (`calibrate.family_metrics`): AUC, AP, balanced accuracy at the model's `t_fake`,
TPR at 1% FPR, counts.
- `splice_localisation`: pixel AUC of the region map (bilinear to the tile) against the splice masks,
  every pixel of every test splice pooled: how well the heatmap says where the pasted region is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from brushpen.safety.calibrate import family_metrics, roc_auc
from brushpen.safety.detector import Detector, DetectorConfig, tile_image, to_tensor
from brushpen.safety.detector_data import Sample, describe_sources, load_arrays, load_rgb
from brushpen.safety.detector_heldout import headline, held_out_markdown, summarise
from brushpen.safety.detector_train import TrainConfig, logits_of
from brushpen.safety.perturb import PERTURBATIONS
from brushpen.store import atomic_write_json, atomic_write_text

SETTINGS = ("in-distribution", "jpeg75", "resize0.5", "resize0.5+jpeg75")
AUGMENT_NOTES = {"basic": "JPEG 60-100, blur, resize 0.5-1.5x, crops, flips",
                 "chain": "resize 0.5-1.5x and crops, then none, one or a chain of two of JPEG 60-95, blur, noise "
                          "and sharpening; flips"}


def _perturbed_logits(model: Detector, samples: list[Sample], setting: str, progress: bool) -> np.ndarray:
    if setting == "in-distribution":
        return logits_of(model, np.stack([load_rgb(s.path, model.config.tile) for s in samples]))
    fn = PERTURBATIONS[setting]
    images = []
    for s in tqdm(samples, desc=setting, disable=not progress, leave=False):
        with Image.open(s.path) as im:
            tiles, _, _ = tile_image(fn(im.convert("RGB")), model.config.tile)
        images.append(tiles[0])   # a 64 patch perturbed stays one tile (32 -> enlarged to 64)
    return logits_of(model, np.stack(images))


def evaluate(model: Detector, samples: list[Sample], settings: tuple[str, ...] = SETTINGS,
             progress: bool = True) -> list[dict]:
    """Rows {setting, family, auc, ap, acc, tpr_at_1fpr, n_real, n_fake} on the test split."""
    test = [s for s in samples if s.split == "test"]
    families = sorted({s.family for s in test if s.label == 1})
    rows = []
    for setting in settings:
        logits = _perturbed_logits(model, test, setting, progress)
        scores = model.calibration.probability(logits)
        labels = np.array([s.label for s in test])
        fams = np.array([s.family for s in test])
        for fam in families + ["all"]:
            keep = (labels == 0) | ((fams == fam) if fam != "all" else (labels == 1))
            rows.append({"setting": setting, "family": fam,
                         **family_metrics(scores[keep], labels[keep], model.calibration.t_fake)})
    return rows


@torch.no_grad()
def splice_localisation(model: Detector, samples: list[Sample], batch: int = 256) -> dict | None:
    """{pixel_auc, n_images} of the region map against the masks of the test splices (None: no masks)."""
    test = [s for s in samples if s.split == "test" and s.mask is not None]
    if not test:
        return None
    images, masks = load_arrays(test, model.config.tile)
    model.eval()
    where = torch.cat([model(to_tensor(images[i:i + batch]))[1] for i in range(0, len(images), batch)])
    heat = F.interpolate(where, size=masks.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy()
    return {"pixel_auc": round(roc_auc(heat.ravel(), (masks.ravel() >= 128).astype(int)), 4), "n_images": len(test)}


def table_markdown(rows: list[dict]) -> str:
    lines = ["| setting | family | AUC | AP | bal. acc @ t_fake | TPR @ 1% FPR | real | fake |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = r["setting"] + (f" ({r['steps']} steps)" if r.get("steps") else "")
        lines.append(f"| {setting} | {r['family']} | {r['auc']:.4f} | {r['ap']:.4f} | {r['acc']:.4f} | "
                     f"{r['tpr_at_1fpr']:.4f} | {r['n_real']} | {r['n_fake']} |")
    return "\n".join(lines)


def write_eval(model_dir: Path, rows: list[dict], command: str, localisation: dict | None = None,
               held_out: list[dict] | None = None) -> dict:
    """Merge the rows into metrics.json (key `auc`: in-distribution, all families; `held_out` and
    its `held_out_summary`, replaced when given) and the card."""
    model_dir = Path(model_dir)
    path = model_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    if localisation:
        metrics["splice_localisation"] = localisation
    if held_out:
        metrics["held_out"], metrics["held_out_summary"] = held_out, summarise(held_out)
        metrics["held_out_command"] = command
    old = [r for r in metrics.get("eval", []) if (r["setting"], r["family"]) not in
           {(n["setting"], n["family"]) for n in rows}]
    metrics["eval"] = old + rows
    if rows:
        metrics["eval_command"] = command
    for r in metrics["eval"]:
        if r["setting"] == "in-distribution" and r["family"] == "all":
            metrics.update(auc=round(r["auc"], 4), ap=round(r["ap"], 4), tpr_at_1fpr=round(r["tpr_at_1fpr"], 4))
    atomic_write_json(path, metrics)
    atomic_write_text(model_dir / "eval.md", table_markdown(metrics["eval"]) + "\n")
    return metrics



def base_config(model_dir: Path, real: list[Path], fake: list[Path], steps: int) -> TrainConfig:
    """The recipe `model_dir` was trained with (its train.json), on these folders, for `steps`:
    what its held-out stand-ins train with."""
    train = json.loads((Path(model_dir) / "train.json").read_text())
    cfg, arch = train["config"], json.loads((Path(model_dir) / "config.json").read_text())["architecture"]
    model = DetectorConfig(**{k: arch[k] for k in ("widths", "strides", "npr", "npr_gain", "region_max", "tile")
                              if k in arch})
    return TrainConfig(out=Path(model_dir), real=list(real), fake=list(fake), steps=steps, batch=cfg["batch"],
                       lr=cfg["lr"], weight_decay=cfg["weight_decay"], loc_weight=cfg["loc_weight"],
                       seed=cfg["seed"], augment=cfg.get("augment", "basic"), model=model,
                       families=tuple(cfg["families"]) if cfg.get("families") else None)


def _localisation_md(loc: dict | None) -> str:
    if not loc:
        return ""
    return (f"\nSplice localisation (the heatmap): pixel AUC {loc['pixel_auc']:.4f} of the region map against the "
            f"masks, all pixels of the {loc['n_images']} test splices pooled.\n")


def write_card(model_dir: Path) -> Path:
    """card.md from train.json, config.json and metrics.json (rewritten on every eval)."""
    model_dir = Path(model_dir)
    train = json.loads((model_dir / "train.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text()) if (model_dir / "metrics.json").exists() else {}
    cal, arch = config["calibration"], config["architecture"]
    from brushpen.safety.fakes import FAMILIES   # the families the checker is meant to cover
    missing = [f for f in FAMILIES if f not in train["families"]]
    gap = (f"\n**Trained without {', '.join(missing)}** (not in the fake set when it was trained): the "
           "in-distribution table covers its own families only; the held-out section scores it on every "
           "family.\n") if missing else ""
    text = f"""# {model_dir.name}: brushpen's AI-made image detector

A {train['params']:,}-parameter CNN on RGB + NPR residuals (x - up(down(x))) of 64x64 patches, with a
classification head (global average pool + 1x1) and a localisation head (per-region logits,
trained on the splice masks; the scan's heatmap). Conv/BN/ReLU only: int8-friendly (static QDQ).
Widths {arch['widths']}, strides {arch['strides']}. See `brushpen/safety/detector.py`.
{gap}
## Held out: generators and cameras it never saw

Headline: {headline(metrics.get('held_out_summary', {}))}.

    {metrics.get('held_out_command', '(not evaluated yet)')}

{held_out_markdown(metrics.get('held_out', [])) or '(no held-out models evaluated yet)'}

Protocol: `brushpen/safety/detector_heldout.py`. LOFO: a model trained without one fake family, on
that family's test fakes against all test reals. LOSO: a model trained without one photo source's
reals and the fakes made from them, on that source's patches (every split) against the other test
fakes. Each with this model's recipe at the steps shown and its own validation thresholds. Unseen
set: this model as it is, on a fake set it never trained on (every family held out); unseen
sources: reals from photo packages outside its data, against every test fake. JPEG 75 hits real and
fake alike. FPR@t_fake: the share of the held-out reals at or above the `fake` band.

## Training

    {train['command']}

{train['steps']} steps of batch {train['config']['batch']} (half real, half fake spread evenly over the
families {', '.join(train['families'])}), AdamW lr {train['config']['lr']} cosine, augmentation
({AUGMENT_NOTES[train['config'].get('augment', 'basic')]}) alike for both classes, {train['threads']} CPU thread.
Images per split: {json.dumps(train['counts'])}.

## Calibration

Temperature T = {cal['temperature']:.4f}; verdict `fake` if p >= {cal['t_fake']:.4f}, `real` if
p < {cal['t_real']:.4f}, else `uncertain`. Rule: {cal['rule']}. Fitted on {json.dumps(cal['fitted_on'])}.

## In distribution (test split, disjoint by source photo)

    {metrics.get('eval_command', '(not evaluated yet)')}

{table_markdown(metrics.get('eval', []))}
{_localisation_md(metrics.get('splice_localisation'))}
Protocol: `brushpen/safety/detector_eval.py`. Each family's test fakes against all test reals;
perturbations (`brushpen.safety.perturb`) hit real and fake alike; 32 px results are enlarged to
64 as a scan does. Balanced accuracy = (TPR + TNR) / 2 at t_fake.

## Data

{train.get('data_md') or describe_sources(train['config']['real'], train['config']['fake'])}

## Licence

The weights were trained here from scratch and are released under the project's licence. The
training photos keep their own licences (table above: CC-BY, CC-BY-SA, CC0, GPL, per file, as
recorded in `sources.json`); the weights contain no image, but credit the photographers named there.
"""
    return atomic_write_text(model_dir / "card.md", text)
