"""Image generation as a service: request in, PIL images with their settings out.

`generate_images` is the one code path behind `brushpen image generate` (and, later, the API and
the studio). Image i of a request uses seed `seed + i`, so any single image can be re-made alone
from the settings stored in its PNG text chunk (`brushpen` key, JSON), as A1111's "PNG info" does.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from brushpen.errors import BadParameter
from brushpen.store import atomic_write_bytes, resolve_model

MAX_IMAGES_PER_REQUEST = 256


@dataclass
class ImageRequest:
    model: str = "emoji64"
    n: int = 1
    seed: int | None = None
    truncation_psi: float = 1.0
    label: str | None = None          # class name or index, for class-conditional models
    mix_seed: int | None = None       # style mixing: a second seed ...
    mix_cutoff: int | None = None     # ... whose w drives the layers from this index on
    # Per-pixel noise off by default: on emoji64 it measured far better FID (189 vs 310 at 32 kimg,
    # 500 samples) and looks smoother; "const" and "random" remain available.
    noise_mode: str = "none"

    def validate(self) -> None:
        if not 1 <= self.n <= MAX_IMAGES_PER_REQUEST:
            raise BadParameter(f"n must lie in 1..{MAX_IMAGES_PER_REQUEST}")
        if self.noise_mode not in ("const", "random", "none"):
            raise BadParameter("noise_mode must be const, random or none")
        if (self.mix_seed is None) != (self.mix_cutoff is None):
            raise BadParameter("style mixing needs both mix_seed and mix_cutoff")


@dataclass
class GeneratedImage:
    image: Image.Image
    settings: dict

    def png_bytes(self) -> bytes:
        import io

        info = PngImagePlugin.PngInfo()
        info.add_text("brushpen", json.dumps(self.settings, sort_keys=True))
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()


@lru_cache(maxsize=4)
def _pipeline(model_dir: str):
    from brushpen.gan.pipeline import StyleGANPipeline

    return StyleGANPipeline.from_pretrained(model_dir)


def generate_images(req: ImageRequest) -> list[GeneratedImage]:
    req.validate()
    model_dir = resolve_model(req.model, family="gan")
    pipe = _pipeline(str(model_dir.resolve()))
    base_seed = req.seed if req.seed is not None else random.randrange(2**31)
    label = pipe.label_index(req.label)  # validates the class name before any work
    out = []
    for i in range(req.n):
        seed = base_seed + i
        mix = torch.Generator().manual_seed(req.mix_seed + i) if req.mix_seed is not None else None
        img = pipe(1, torch.Generator().manual_seed(seed), truncation_psi=req.truncation_psi,
                   label=label, mix_generator=mix, mix_cutoff=req.mix_cutoff, noise_mode=req.noise_mode)[0]
        settings = {**asdict(req), "n": 1, "seed": seed, "model": model_dir.name,
                    "label": pipe.class_names[label] if label is not None else None,
                    "mix_seed": req.mix_seed + i if req.mix_seed is not None else None}
        out.append(GeneratedImage(img, settings))
    return out


def save_images(images: list[GeneratedImage], out_dir: Path, prefix: str = "") -> list[Path]:
    paths = []
    for img in images:
        s = img.settings
        name = f"{prefix}{s['model']}-seed{s['seed']}-psi{s['truncation_psi']:g}.png"
        paths.append(atomic_write_bytes(Path(out_dir) / name, img.png_bytes()))
    return paths


def read_png_settings(path: Path) -> dict:
    """The settings a brushpen PNG was made with (empty if it carries none)."""
    with Image.open(path) as im:
        text = im.info.get("brushpen")
    return json.loads(text) if text else {}
