"""The detector's data: reading real and fake sets, training augmentation and class-balanced batches.

**Sets** (`read_set`). A folder is read in the first way that fits:
1. `manifest.jsonl` in the `build-fakes` schema (rows with `path`, `family`, `label`, `split`,
   `mask`): each row is one sample; with `--real` only its label-0 rows are used, with `--fake`
   only its label-1 rows.
2. `manifest.jsonl` in the `data photos` schema (rows with `file`, `split`): all real.
3. Otherwise by layout: `<split>/*.png` (family = the folder's name, or `real`) or
   `<family>/<split>/*.png`.
Reals must be encoded like the fakes (e.g. `build-fakes`' OUT/real, or the real rows of its
manifest, which `train` uses when no `--real` is given): the trainer does not re-encode on its own,
so a lossless real set against JPEG'd fakes would teach the file format.

**Augmentation** (`augment`), applied alike to real and fake training images, so the detector
cannot learn the processing as the cue: resize 0.5-1.5x (p 0.3, bicubic or bilinear) then a random
64-crop, or an enlargement back to 64 as a scan does for small images; then the post-processing an
image meets after it is made (`recipe="chain"`, the default): none (p 0.4), one (p 0.35) or a chain
of two (p 0.25) of JPEG 60-95, Gaussian blur sigma 0.2-1.2, Gaussian noise sigma 1-5 (of 255) and an
unsharp mask, in random order; horizontal flip (p 0.5). `recipe="basic"` is the earlier recipe
(CNNDetection's: blur sigma 0.1-1.5 p 0.1, then JPEG 60-100 p 0.3), kept for the ablation.

**Photo sources** (`photo_source`): the package a real patch was cut from, grouped as the held-out
protocol leaves them out (the two lomiri packages are one source, the PyPI sample images another).
Fakes made from a real patch (decoder, SR, splices) carry its source too; fakes drawn from noise
have none.

**Batches** (`BalancedSampler`): half real, half fake, and the fake half spread evenly over the
generator families, so a family with more images does not dominate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from brushpen.errors import BadInput
from brushpen.safety.detector import TILE
from brushpen.safety.perturb import jpeg

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int              # 0 real, 1 fake
    family: str             # "real", "stylegan", "diffusion", "decoder", "splice", ...
    split: str
    mask: Path | None = None  # splices: 255 where generated
    source: str | None = None  # the real patch shown or changed (manifest `source`); None: drawn from noise


def _rows(manifest: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise BadInput(f"{manifest} is not JSON lines: {e}") from e


def read_set(folder: Path, label: int) -> list[Sample]:
    """The samples of one class (0 real, 1 fake) in a folder; see the module docstring."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"no such data folder: {folder}")
    manifest = folder / "manifest.jsonl"
    if manifest.exists():
        rows = _rows(manifest)
        if rows and "label" in rows[0]:
            return [Sample(folder / r["path"], int(r["label"]), r["family"], r["split"],
                           folder / r["mask"] if r.get("mask") else None, r.get("source"))
                    for r in rows if int(r["label"]) == label]
        if rows and "file" in rows[0] and label == 0:
            return [Sample(folder / r["file"], 0, "real", r["split"], source=r["file"]) for r in rows]
    out = []
    for split in SPLITS:
        for f in sorted((folder / split).glob("*.png")):
            out.append(Sample(f, label, "real" if label == 0 else folder.name, split))
    if not out:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for split in SPLITS:
                for f in sorted((sub / split).glob("*.png")):
                    out.append(Sample(f, label, "real" if label == 0 else sub.name, split))
    if not out:
        raise BadInput(f"{folder} holds no manifest.jsonl and no <split>/*.png or <family>/<split>/*.png")
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_any(folder: Path, label: int, val_fraction: float = 0.2) -> list[Sample]:
    """`read_set`'s layouts, else every image under the folder (recursive; a user's own folder for
    fine-tuning), with a fixed `val_fraction` of the files (at least one of two or more) held out."""
    try:
        return read_set(folder, label)
    except BadInput:
        if not Path(folder).is_dir():
            raise
    files = sorted(f for f in Path(folder).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise BadInput(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    n_val = max(1, int(round(val_fraction * len(files)))) if len(files) >= 2 and val_fraction > 0 else 0
    val = set(np.random.default_rng(0).permutation(len(files))[:n_val].tolist())
    family = "real" if label == 0 else Path(folder).name
    return [Sample(f, label, family, "val" if i in val else "train") for i, f in enumerate(files)]


# Packages that are one photo source to the held-out protocol (the rest are their own).
SOURCE_GROUPS = {"lomiri-wallpapers-16.04": "lomiri-wallpapers", "lomiri-wallpapers-20.04": "lomiri-wallpapers",
                 "scikit-image": "pypi-samples", "scikit-learn": "pypi-samples"}


def photo_source(sample: Sample) -> str | None:
    """The photo source behind a sample (`data photos` names patches PACKAGE__PHOTO-NNN.png), or
    None for fakes drawn from noise and for patches named otherwise."""
    if not sample.source or "__" not in Path(sample.source).name:
        return None
    package = Path(sample.source).name.split("__", 1)[0]
    return SOURCE_GROUPS.get(package, package)


def gather(real: list[Path], fake: list[Path], families: tuple[str, ...] | None = None,
           exclude: tuple[str, ...] = (), exclude_sources: tuple[str, ...] = ()) -> list[Sample]:
    """All samples of the given folders, fakes restricted to `families` and without `exclude`;
    without any sample from the photo sources in `exclude_sources` (reals, and fakes made from them).
    With no real folder, the label-0 rows of the fake folders' manifests are the reals."""
    samples = [s for d in (real or fake) for s in read_set(d, 0)]
    for d in fake:
        samples += [s for s in read_set(d, 1)
                    if (families is None or s.family in families) and s.family not in exclude]
    if exclude_sources:
        samples = [s for s in samples if photo_source(s) not in exclude_sources]
    if not any(s.label == 0 for s in samples) or not any(s.label == 1 for s in samples):
        raise BadInput("training needs both real and fake images (check --real/--fake/--families)")
    return samples


def load_rgb(path: Path, tile: int = TILE) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise BadInput(f"cannot read {path}: {e}") from e
    if im.size != (tile, tile):
        im = im.resize((tile, tile), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def load_arrays(samples: list[Sample], tile: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, tile, tile, 3) uint8, masks (N, tile, tile) uint8: 255 where generated)."""
    images = np.stack([load_rgb(s.path, tile) for s in samples]) if samples else np.zeros((0, tile, tile, 3), np.uint8)
    masks = np.zeros((len(samples), tile, tile), np.uint8)
    for i, s in enumerate(samples):
        if s.mask is not None and s.mask.exists():
            with Image.open(s.mask) as m:
                masks[i] = np.asarray(m.convert("L").resize((tile, tile), Image.BILINEAR))
        elif s.label == 1:
            masks[i] = 255
    return images, masks


def _noise(im: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(a.round().clip(0, 255).astype(np.uint8))


# One post-processing step each: (image, rng) -> image. The chain draws from these.
POST_OPS = {
    "jpeg": lambda im, rng: jpeg(im, int(rng.integers(60, 96))),
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.2)))),
    "noise": lambda im, rng: _noise(im, float(rng.uniform(1, 5)), rng),
    "sharpen": lambda im, rng: im.filter(ImageFilter.UnsharpMask(radius=float(rng.uniform(0.5, 2)),
                                                                 percent=int(rng.integers(50, 151)), threshold=0)),
}
RECIPES = ("chain", "basic")


def post_process(im: Image.Image, rng: np.random.Generator, recipe: str = "chain") -> Image.Image:
    """The processing an image meets after it is made (module docstring has both recipes)."""
    if recipe == "basic":
        if rng.random() < 0.1:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.1, 1.5))))
        return jpeg(im, int(rng.integers(60, 101))) if rng.random() < 0.3 else im
    k = int(rng.choice(3, p=(0.4, 0.35, 0.25)))
    for name in rng.permutation(sorted(POST_OPS))[:k]:
        im = POST_OPS[str(name)](im, rng)
    return im


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, tile: int = TILE,
            recipe: str = "chain") -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a training image and its mask (module docstring has the recipe)."""
    im, m = Image.fromarray(image), Image.fromarray(mask)
    if rng.random() < 0.3:
        side = max(8, int(round(tile * rng.uniform(0.5, 1.5))))
        method = Image.BICUBIC if rng.random() < 0.5 else Image.BILINEAR
        im, m = im.resize((side, side), method), m.resize((side, side), Image.BILINEAR)
        if side < tile:   # as the scanner does with small images
            im, m = im.resize((tile, tile), Image.BICUBIC), m.resize((tile, tile), Image.BILINEAR)
        elif side > tile:
            x, y = (int(v) for v in rng.integers(0, side - tile + 1, 2))
            im, m = im.crop((x, y, x + tile, y + tile)), m.crop((x, y, x + tile, y + tile))
    im = post_process(im, rng, recipe)
    out, mout = np.asarray(im, np.uint8), np.asarray(m, np.uint8)
    if rng.random() < 0.5:
        out, mout = out[:, ::-1], mout[:, ::-1]
    return out, mout


def describe_sources(real: list, fake: list) -> str:
    """Where the training images came from, in markdown: the photo packages (their `sources.json`)
    and the fake set's own card, verbatim. `train_detector` keeps it in train.json, so the model's
    card describes the data it was trained on even after the set is rebuilt."""
    lines = []
    for d in map(Path, [*fake, *(real or fake)]):
        for cand in (d / "card.json", d.parent / "card.json"):
            if cand.exists():
                card = json.loads(cand.read_text())
                photos = Path(card.get("real") or "") / "sources.json"
                if photos.exists():
                    src = json.loads(photos.read_text())
                    lines.append("Real photo patches (`brushpen data photos`), per package:\n")
                    lines.append("| package | version | photos train/val/test | patches | licences |")
                    lines.append("|---|---|---|---|---|")
                    for name, p in sorted(src["packages"].items()):
                        ph = p.get("photos", {})
                        lic = ", ".join(f"{k} ({v})" for k, v in sorted(p.get("licences", {}).items()))
                        lines.append(f"| {name} | {p.get('version')} | {ph.get('train', 0)}/{ph.get('val', 0)}/"
                                     f"{ph.get('test', 0)} | {p.get('patches')} | {lic} |")
                md = cand.with_name("card.md")
                if md.exists():
                    lines.append("\nThe fake set's own card (`brushpen detect build-fakes`), verbatim:\n")
                    lines.append("\n".join("> " + ln for ln in md.read_text().splitlines()))
                return "\n".join(lines)
    return "Training folders: " + ", ".join(map(str, [*fake, *real]))


class BalancedSampler:
    """Index batches: half real, the other half fake spread evenly over families."""

    def __init__(self, samples: list[Sample]):
        self.real = np.array([i for i, s in enumerate(samples) if s.label == 0])
        fams = sorted({s.family for s in samples if s.label == 1})
        self.fakes = [np.array([i for i, s in enumerate(samples) if s.label == 1 and s.family == f]) for f in fams]
        self.families = fams

    def batch(self, size: int, rng: np.random.Generator) -> np.ndarray:
        n_real = size // 2
        fam = rng.integers(0, len(self.fakes), size - n_real)
        fake = [int(self.fakes[f][rng.integers(0, len(self.fakes[f]))]) for f in fam]
        return np.concatenate([rng.choice(self.real, n_real), np.array(fake, dtype=np.int64)])
