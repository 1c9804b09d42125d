"""FID of a generator's edge variants, from the same seeds, against the model's training images.

    python -m brushpen.edge.gan_quality emoji64 --num 2000 --variants onnx,onnx-int8,student

Every variant draws the same z's and classes (one `torch.Generator().manual_seed(seed)`, classes
from the data's own mix, as `brushpen gan eval` does), psi 1, noise off, and its images go through
the Inception-v3 of `brushpen.gan.metrics`. Fake features are cached per variant file under
`$BRUSHPEN_HOME/fid/edge/`, so a variant is only re-measured when its file changes. The real
images' features must already be cached (`brushpen gan eval` or the data build makes them; this
module never computes them). Written into edge/report.json: `fid` (vs the real images), `fid_num`,
for int8 and student `fid_vs_fp32`, the FID between their images and the fp32 graph's (same seeds),
and for every variant `fid_heldout_fp32`: its first num/2 images against the fp32 graph's last
num/2 (other seeds), a stand-in reference while the real features are not built.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from brushpen.config import apply_threads, get_settings
from brushpen.edge.common import VARIANT_FILES, edge_dir, sha256_file, write_report
from brushpen.edge.gan import OnnxGenerator
from brushpen.errors import BadInput
from brushpen.gan.data import load_image_folder
from brushpen.gan.metrics import _dataset_key, frechet_distance, generated_images, inception_features, stats
from brushpen.store import resolve_model

BATCH = 50


def variant_file(model_dir: Path, variant: str) -> Path:
    edge = edge_dir(model_dir)
    return edge / VARIANT_FILES[variant] if variant in VARIANT_FILES else edge / "student" / "diffusion_pytorch_model.safetensors"


def variant_images(model_dir: Path, variant: str, num: int, label_pool: torch.Tensor | None,
                   seed: int = 0) -> torch.Tensor:
    """uint8 [num, 3, R, R] from one variant (`onnx`, `onnx-int8`, `student` or `torch`), from the
    z's and labels `brushpen gan eval` draws for `seed`, psi 1, noise off."""
    run = None
    if variant in VARIANT_FILES:
        graph = OnnxGenerator(variant_file(model_dir, variant))
        run = lambda z, labels: graph(z, labels, 1.0)  # noqa: E731
    folder = edge_dir(model_dir) / "student" if variant == "student" else model_dir
    with torch.inference_mode():
        return generated_images(folder, num, 1.0, seed, label_pool, BATCH, noise_mode="none", run=run)


def cached_features(model_dir: Path, variant: str, num: int, label_pool: torch.Tensor | None) -> np.ndarray:
    key = sha256_file(variant_file(model_dir, variant))[:16]
    folder = get_settings().home / "fid" / "edge"
    cache = folder / f"{Path(model_dir).name}-{variant}-{num}-{key}.safetensors"
    if cache.exists():
        return load_file(str(cache))["features"]
    # Images i < n are the same for every num >= n (one seeded generator, fixed batches of 50), so a
    # smaller cached set is extended rather than recomputed: Inception is the slow part here.
    done = [int(p.name.split("-")[-2]) for p in folder.glob(f"{Path(model_dir).name}-{variant}-*-{key}.safetensors")]
    have = max([n for n in done if n < num and n % BATCH == 0], default=0)
    old = load_file(str(folder / f"{Path(model_dir).name}-{variant}-{have}-{key}.safetensors"))["features"] \
        if have else np.zeros((0, 2048))
    new = inception_features(variant_images(model_dir, variant, num, label_pool)[have:], desc=f"inception {variant}")
    feats = np.concatenate([old, new])
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": feats}, str(cache.with_suffix(".tmp")))
    cache.with_suffix(".tmp").replace(cache)
    return feats


def real_features(data: Path, resolution: int) -> np.ndarray | None:
    """The cached real-image features, or None while they are not built yet."""
    cache = get_settings().home / "fid" / f"{_dataset_key(data, resolution)}.safetensors"
    return load_file(str(cache))["features"] if cache.exists() else None


def measure(model_dir: Path, variants: list[str], num: int, data: Path) -> dict:
    resolution = json.loads((Path(model_dir) / "config.json").read_text())["resolution"]
    if not data.is_dir():
        raise BadInput(f"reference images not found at {data}")
    pool = load_image_folder(data, resolution, use_labels=True).labels
    feats = {v: cached_features(model_dir, v, num, pool) for v in variants}
    real = real_features(data, resolution)
    report: dict[str, dict] = {}
    for v, f in feats.items():
        row = report.setdefault(v, {"fid_num": num})
        if real is not None:
            row["fid"] = round(frechet_distance(*stats(f), *stats(real)), 3)
        if v != "onnx" and "onnx" in feats:
            row["fid_vs_fp32"] = round(frechet_distance(*stats(f), *stats(feats["onnx"])), 3)
        if "onnx" in feats:
            # Without real features: the first half of this variant's images against the second
            # half of the fp32 graph's (other seeds). For `onnx` itself that is the floor two fp32
            # sets of this size reach; a variant's excess over it is what it loses.
            half = num // 2
            row["fid_heldout_fp32"] = round(frechet_distance(*stats(f[:half]), *stats(feats["onnx"][half:])), 3)
    if real is None:
        print(f"real-image features for {data} are not cached yet: fake features saved, FID vs reals skipped")
    return report


def main() -> None:
    p = argparse.ArgumentParser(description="FID of a GAN's edge variants from the same seeds")
    p.add_argument("model")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--variants", default="onnx,onnx-int8,student")
    p.add_argument("--data", type=Path, default=None, help="real images (default: $BRUSHPEN_HOME/data/emoji64)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    apply_threads(args.threads)
    model_dir = resolve_model(args.model, family="gan")
    report = measure(model_dir, args.variants.split(","), args.num, args.data or get_settings().data_dir / "emoji64")
    write_report(edge_dir(model_dir), report, merge=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
