"""Provenance watermark figures: bit accuracy after re-encoding and resizing, false detections on
unmarked images, PSNR, and embed/extract time per image on one thread.

    .venv/bin/python benchmarks/watermark.py [--emoji 500] [--generated 64] [--real DIR] [--unmarked 6000]

Marked sets: emoji from the built dataset ($BRUSHPEN_HOME/data/emoji64), the shipped GAN's own
outputs, and (with --real) camera photos at their own size and resized to 32..1024 px.
Unmarked sets: every emoji of the dataset, random crops of the photos and of emoji grids at 32..512
px, PIL-drawn shapes and gradients, and images marked under another key.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")        # before numpy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from brushpen.config import get_settings  # noqa: E402
from brushpen.safety.perturb import PERTURBATIONS  # noqa: E402
from brushpen.safety.watermark import MIN_SIDE, Payload, embed, extract, model_tag  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean((x - y) ** 2), 1e-12)))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def generated_images(n: int) -> list[Image.Image]:
    import torch

    from brushpen.generators.images import ImageRequest, generate_images

    torch.set_num_threads(1)
    return [g.image for g in generate_images(ImageRequest(model="emoji64", n=n, seed=1000))]


def synthetic(rng: random.Random) -> Image.Image:
    """A flat or gradient background with a few saturated shapes: emoji-like, never marked."""
    side = rng.choice([32, 48, 64, 96, 128, 256])
    im = Image.new("RGB", (side, side), rng.choice([(255, 255, 255), (0, 0, 0), (240, 240, 235)]))
    if rng.random() < 0.5:
        ramp = np.linspace(0, 255, side, dtype=np.float32)
        im = Image.fromarray(np.stack([np.add.outer(ramp, ramp) / 2] * 3, -1).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 6)):
        x0, y0 = rng.randrange(side), rng.randrange(side)
        box = (x0, y0, x0 + rng.randint(4, side), y0 + rng.randint(4, side))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return im


def crop(source: Image.Image, rng: random.Random) -> Image.Image:
    side = rng.randint(MIN_SIDE, min(512, *source.size))
    x, y = rng.randrange(source.width - side + 1), rng.randrange(source.height - side + 1)
    return source.crop((x, y, x + side, y + side))


def unmarked_images(emoji: list[Path], photos: list[Image.Image], n: int, seed: int = 0):
    """`n` unmarked images: all emoji first, then crops of photos and emoji grids, shapes, and
    images marked under another key (every fifth)."""
    rng = random.Random(seed)
    for p in emoji[:n]:
        yield "emoji", Image.open(p).convert("RGB")
    grid = Image.new("RGB", (512, 512))
    for k in range(n - min(n, len(emoji))):
        kind = k % 5
        if kind == 0:
            yield "other key", embed(synthetic(rng), Payload(model=rng.randrange(2**16), image_id=k),
                                     key=b"someone-else-%d" % k)
        elif kind == 1 and photos:
            yield "photo crop", crop(rng.choice(photos), rng)
        elif kind == 2:
            for i in range(64):   # a fresh 8×8 emoji collage
                grid.paste(Image.open(rng.choice(emoji)).convert("RGB"), ((i % 8) * 64, (i // 8) * 64))
            yield "emoji crop", crop(grid, rng)
        else:
            yield "shapes", synthetic(rng)


def measure(name: str, images: list[Image.Image], rows: list[str]) -> None:
    payloads = [Payload(model=model_tag("emoji64"), image_id=(7919 * i) % 2**32) for i in range(len(images))]
    acc = {k: [] for k in PERTURBATIONS}
    exact = {k: 0 for k in PERTURBATIONS}
    psnrs, t_embed, t_extract = [], [], []
    for image, payload in zip(images, payloads):
        t0 = time.perf_counter()
        marked = embed(image, payload)
        t_embed.append(time.perf_counter() - t0)
        psnrs.append(psnr(image, marked))
        bits = payload.to_bits()
        for key, perturb in PERTURBATIONS.items():
            seen = perturb(marked)
            if min(seen.size) < MIN_SIDE:
                continue
            t0 = time.perf_counter()
            det = extract(seen)
            t_extract.append(time.perf_counter() - t0)
            acc[key].append(float(np.mean(det.bits == bits)))
            exact[key] += det.payload == payload
    rows.append(f"\n{name}: {len(images)} images, PSNR mean {np.mean(psnrs):.2f} dB, min {np.min(psnrs):.2f} dB; "
                f"embed {1e3 * np.mean(t_embed):.1f} ms, extract {1e3 * np.mean(t_extract):.1f} ms per image")
    rows.append(f"  {'perturbation':18s} {'bit acc mean':>12s} {'bit acc min':>12s} {'exact payload':>14s}")
    for key in PERTURBATIONS:
        if acc[key]:
            rows.append(f"  {key:18s} {np.mean(acc[key]):12.4f} {np.min(acc[key]):12.4f} "
                        f"{exact[key]:7d}/{len(acc[key]):<6d}")
        else:
            rows.append(f"  {key:18s} {'(images fall below the minimum size)':>40s}")
    print("\n".join(rows[-len(PERTURBATIONS) - 2:]), flush=True)


def timing(rows: list[str]) -> None:
    rng = np.random.default_rng(0)
    for side in (64, 256, 512, 1024):
        image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        embed(image, Payload(1, 1))   # warm the pattern cache
        t0 = time.perf_counter()
        marked = [embed(image, Payload(1, i)) for i in range(5)]
        t1 = time.perf_counter()
        for m in marked:
            extract(m)
        t2 = time.perf_counter()
        rows.append(f"  {side}×{side}: embed {1e3 * (t1 - t0) / 5:.1f} ms, extract {1e3 * (t2 - t1) / 5:.1f} ms")
        print(rows[-1], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--emoji", type=int, default=500, help="dataset emoji to mark")
    ap.add_argument("--generated", type=int, default=64, help="GAN outputs to mark")
    ap.add_argument("--real", type=Path, default=None, help="a folder of camera photos (any depth)")
    ap.add_argument("--photos", type=int, default=60, help="photos to mark, at varied sizes")
    ap.add_argument("--unmarked", type=int, default=6000, help="unmarked images to read")
    args = ap.parse_args()

    emoji = image_files(get_settings().data_dir / "emoji64")
    random.Random(0).shuffle(emoji)
    photos = [Image.open(p).convert("RGB") for p in image_files(args.real)] if args.real else []
    rows = [f"threads: 1 (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}); emoji dataset: {len(emoji)} files; "
            f"photos: {len(photos)}"]
    print(rows[0], flush=True)

    measure("emoji64 dataset", [Image.open(p).convert("RGB") for p in emoji[:args.emoji]], rows)
    if args.generated:
        measure("GAN emoji64 outputs", generated_images(args.generated), rows)
    if photos:
        sides = [32, 64, 128, 256, 512, 1024]
        resized = [p.resize((s, max(MIN_SIDE, round(s * p.height / p.width))), Image.LANCZOS)
                   for p, s in zip(photos[:args.photos], sides * len(photos))]
        measure("photos at 32..1024 px", resized, rows)
        measure("photos at their own size", photos[:args.photos], rows)

    hits, counts = {}, {}
    t0 = time.perf_counter()
    for kind, image in unmarked_images(emoji, photos, args.unmarked):
        counts[kind] = counts.get(kind, 0) + 1
        hits[kind] = hits.get(kind, 0) + extract(image).found
    total, found = sum(counts.values()), sum(hits.values())
    rows.append(f"\nfalse detections on unmarked images: {found}/{total} ({100 * found / total:.3f}%), "
                f"{time.perf_counter() - t0:.0f} s")
    rows += [f"  {kind:12s} {hits[kind]}/{counts[kind]}" for kind in counts]
    print("\n".join(rows[-len(counts) - 1:]), flush=True)

    rows.append("\ntime per image, noise images, 1 thread:")
    print(rows[-1])
    timing(rows)


if __name__ == "__main__":
    main()
