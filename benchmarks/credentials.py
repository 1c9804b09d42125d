"""Content Credentials (C2PA) figures: signing and reading cost per image, the bytes a manifest
adds, the share of outputs that carry a valid manifest, and recovery of a lost manifest through the
watermark after re-encoding, on one thread.

    .venv/bin/python benchmarks/credentials.py [--n 200] [--reps 30] [--json OUT]

Runs on a private $BRUSHPEN_HOME (a fresh signing identity and manifest store), the shipped store.
- cost: the SDK's default (a thumbnail on) against ours (thumbnail off), side by side, at 64x64 (an
  emoji64 output) and 512x512 (the same upscaled): median ms to sign and to read, and the bytes
  added. "ours, full" is `GeneratedImage.png_bytes` as every face calls it: encode the PNG with its
  settings chunks, sign, and keep the manifest in the store (one fsynced file).
- coverage: every output path's files, checked for a valid manifest that declares AI generation:
  the encoder behind the API, batches and the studio (`png_bytes`), the CLI's `image generate`
  files, the studio history's PNGs, and seed walks (GIF and WebP).
- recovery: `--n` emoji64 outputs, each re-encoded (PNG re-save, JPEG 90, JPEG 75, 0.5x + PNG,
  0.5x + JPEG 90): none keeps its manifest; the checker's path (watermark -> manifest store) finds
  the manifest again for the share shown.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _median_ms(fn, reps: int) -> float:
    fn()   # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def cost(images, reps: int) -> list[dict]:
    import c2pa

    from brushpen.safety import credentials

    ident = credentials.identity()
    rows = []
    small = images[0]
    for side, img in ((64, small.image), (512, small.image.resize((512, 512), Image.BICUBIC))):
        data = _png(img)
        manifest = credentials.manifest_definition("x.png", small.settings, {"name": "emoji64"},
                                                   credentials.watermark.payload_for(small.settings))
        default_ctx = c2pa.Context(c2pa.Settings(),
                                   c2pa.Signer.from_info(c2pa.C2paSignerInfo(ident.alg.encode(), ident.chain_pem,
                                                                             ident.key_pem, None)))

        def sign_default():
            out = io.BytesIO()
            c2pa.Builder(manifest, default_ctx).sign("image/png", io.BytesIO(data), out)
            return out.getvalue()

        def sign_ours():
            return credentials.sign(data, "image/png", manifest)

        signed = sign_ours()
        for name, fn in (("SDK default (thumbnail on)", sign_default), ("ours (thumbnail off)", sign_ours)):
            out = fn()
            rows.append({"side": side, "variant": name, "sign_ms": round(_median_ms(fn, reps), 2),
                         "bytes_before": len(data), "bytes_added": len(out) - len(data),
                         "read_ms": round(_median_ms(lambda o=out: credentials.read(o, "image/png"), reps), 2)})
        if side == 64:
            rows.append({"side": 64, "variant": "ours, full (png_bytes: encode, sign, keep in the store)",
                         "sign_ms": round(_median_ms(small.png_bytes, reps), 2),
                         "bytes_before": len(small.png_bytes(sign=False)),
                         "bytes_added": len(small.png_bytes()) - len(small.png_bytes(sign=False)),
                         "read_ms": round(_median_ms(lambda: credentials.read(signed, "image/png"), reps), 2)})
    return rows


def coverage(images, work: Path) -> list[dict]:
    from brushpen.cli.main import main
    from brushpen.generators.history import record_images
    from brushpen.generators.images import WalkRequest, seed_walk
    from brushpen.safety import credentials

    def ok(data: bytes) -> bool:
        c = credentials.read(data)
        return c["state"] == "valid" and c["ai_generated"]

    rows = [{"path": "encoder behind the API, batches, studio (png_bytes)", "n": len(images),
             "with_manifest": sum(ok(g.png_bytes()) for g in images)}]
    out = work / "cli"
    main(["image", "generate", "--n", str(len(images)), "--seed", "7000", "--out", str(out)])
    files = sorted(out.glob("*.png"))
    rows.append({"path": "CLI image generate (files)", "n": len(files),
                 "with_manifest": sum(ok(f.read_bytes()) for f in files)})
    items = record_images(images[:32])
    rows.append({"path": "studio history (PNGs)", "n": len(items),
                 "with_manifest": sum(ok(Path(i.path).read_bytes()) for i in items)})
    walks = [seed_walk(WalkRequest(model="emoji64", seed_a=k, seed_b=k + 1, frames=4, format=fmt))
             for k in range(4) for fmt in ("gif", "webp")]
    rows.append({"path": "seed walks (GIF, WebP)", "n": len(walks), "with_manifest": sum(ok(w) for w in walks)})
    return rows


def recovery(images) -> list[dict]:
    from brushpen.safety import credentials, watermark

    def reencode(data: bytes, fmt: str, quality: int = 90, scale: float = 1.0) -> bytes:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        if scale != 1.0:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        out = io.BytesIO()
        im.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        return out.getvalue()

    cases = {"PNG re-save": dict(fmt="PNG"), "JPEG 90": dict(fmt="JPEG", quality=90),
             "JPEG 75": dict(fmt="JPEG", quality=75), "0.5x resize, PNG": dict(fmt="PNG", scale=0.5),
             "0.5x resize + JPEG 90": dict(fmt="JPEG", quality=90, scale=0.5)}
    signed = [g.png_bytes() for g in images]
    rows = []
    for name, kw in cases.items():
        kept = found = 0
        times = []
        for data in signed:
            re = reencode(data, **kw)
            kept += credentials.read(re)["state"] != "none"
            t0 = time.perf_counter()
            det = watermark.extract(Image.open(io.BytesIO(re)).convert("RGB"))
            hit = credentials.recover(det.payload if det.found else None, re)
            times.append((time.perf_counter() - t0) * 1000)
            found += bool(hit and hit.get("ai_generated"))
        rows.append({"perturbation": name, "n": len(signed), "manifest_kept": kept, "recovered": found,
                     "recovered_share": round(found / len(signed), 4),
                     "ms_per_image": round(statistics.median(times), 2)})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="emoji64 outputs for coverage and recovery")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        os.environ["BRUSHPEN_HOME"] = str(Path(work) / "home")
        import torch

        from brushpen.generators.images import ImageRequest, generate_images

        torch.set_num_threads(1)
        images = generate_images(ImageRequest(model="emoji64", n=args.n, seed=5000))
        result = {"threads": 1, "cost": cost(images, args.reps), "coverage": coverage(images, Path(work)),
                  "recovery": recovery(images)}
    for key in ("cost", "coverage", "recovery"):
        print(f"\n{key}\n" + table(result[key]))
    total = sum(r["n"] for r in result["coverage"])
    signed = sum(r["with_manifest"] for r in result["coverage"])
    print(f"\noutputs with a valid manifest: {signed}/{total} ({signed / total:.1%})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
