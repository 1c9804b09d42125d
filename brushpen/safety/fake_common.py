"""What every builder of the detector's fake set shares (`brushpen.safety.fakes` runs the build):
the build's config (`FakesConfig`), the real patches and their splits, the seeded draw of host
patches, the manifest row, and the re-encoded write of a finished image. It sits below the
family builders (`fakes`, `fake_families`) and the generators (`fake_generators`), which all
import it, so none of them has to import another's module to reach these.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from brushpen.errors import BadInput, BadParameter
from brushpen.safety.photos import SPLITS, Encoding, apply_encoding, draw_encoding
from brushpen.store import atomic_write_bytes

# Build order: generators before the families that reuse them (ddpm and inpaint reuse the
# diffusion family's model); the local fakes (splice, inpaint, emoji) last.
FAMILIES = ("stylegan", "diffusion", "decoder", "dcgan", "ddpm", "vae", "sr-shuffle", "sr-interp",
            "splice", "inpaint", "emoji")
ROW_KEYS = ("path", "family", "label", "generator", "split", "encoding", "quality", "source", "mask",
            "mask_area")


@dataclass
class FakesConfig:
    """Every knob of a build; tests shrink the generators and budgets."""

    real: Path
    out: Path
    families: tuple[str, ...] = FAMILIES
    count: int = 600                    # fakes per family in the train split (11 families: 6,600)
    seed: int = 0
    models: Path | None = None          # where generators train; None = OUT/.models
    stylegan_kimg: float = 90.0         # the budgets of the issue-16 fake set (CPU, one thread)
    stylegan_channels: tuple[int, ...] = (128, 96, 64, 32, 16)
    diffusion_steps: int = 1500
    diffusion_resolution: int = 64      # 64: no up-scaling trace of its own (the set before issue 16: 32)
    ddim_steps: int = 20                # DDIM steps of the diffusion and inpaint families
    decoder_steps: int = 200
    dcgan_steps: int = 3000             # DCGAN training steps (one D and one G update each)
    vae_steps: int = 600                # VAE training steps
    sr_steps: int = 600                 # training steps of each SR network (sr-shuffle, sr-interp)
    ddpm_steps: int = 25                # ancestral DDPM sampling steps of the diffusion model (ddpm family)
    inpaint_area: tuple[float, float] = (0.05, 0.40)   # share of the patch an inpainting mask covers
    emoji_model: str = "emoji64"        # the store GAN whose samples the emoji family pastes in
    train_batch: int = 32
    batch: int = 64                     # generation batch
    real_copy: bool = True
    threads: int | None = 1
    progress: bool = True

    def validate(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise BadParameter(f"unknown families {unknown}: pick from {', '.join(FAMILIES)}")
        if self.count < 1:
            raise BadParameter("--count must be at least 1")
        lo, hi = self.inpaint_area
        if not 0 < lo <= hi < 1:
            raise BadParameter("the inpainting area range must satisfy 0 < low <= high < 1")

    def models_dir(self) -> Path:
        return Path(self.models) if self.models else Path(self.out) / ".models"


@dataclass(frozen=True)
class RealPatch:
    file: str   # relative to the real set, e.g. "train/x-001.png"
    split: str


def read_real(real: Path) -> list[RealPatch]:
    """The real set's patches, from its manifest.jsonl or, failing that, its split folders."""
    real = Path(real)
    manifest = real / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
        patches = [RealPatch(r["file"], r["split"]) for r in rows]
    else:
        patches = [RealPatch(p.relative_to(real).as_posix(), s) for s in SPLITS
                   for p in sorted((real / s).glob("*.png"))]
    if not any(p.split == "train" for p in patches):
        raise BadInput(f"{real} has no train patches (expected {real}/train/*.png or a manifest.jsonl)")
    return patches


def split_counts(cfg: FakesConfig, real: list[RealPatch]) -> dict[str, int]:
    n = {s: sum(p.split == s for p in real) for s in SPLITS}
    return {s: cfg.count if s == "train" else round(cfg.count * n[s] / n["train"]) for s in SPLITS}


def draw_hosts(cfg: FakesConfig, family: str, real: list[RealPatch], split: str) -> list[RealPatch]:
    """The real patches of `split` that `family` remakes or pastes into (seeded, per family)."""
    pool = [p for p in real if p.split == split]
    n = split_counts(cfg, real)[split]
    rng = random.Random(f"{cfg.seed}:{family}:{split}:hosts")
    return rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]


def seed_of(key: str) -> int:
    """A torch seed from a text key; stable across runs (a str seeds random.Random via SHA-512)."""
    return random.Random(key).getrandbits(63)


def row(path: str, family: str, generator: str, split: str, encoding: dict, source: str | None = None,
        mask: str | None = None, mask_area: float | None = None) -> dict:
    return {"path": path, "family": family, "label": int(family != "real"), "generator": generator,
            "split": split, **encoding, "source": source, "mask": mask, "mask_area": mask_area}


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encoding_for(rel: str, seed: int) -> dict:
    enc = draw_encoding(random.Random(f"{seed}:encode:{rel}"))
    return {"encoding": enc.format, "quality": enc.quality}


def write_encoded(out: Path, rel: str, image: Image.Image, seed: int) -> dict:
    """Re-encode `image` with the path's encoding, write it as PNG; returns the encoding fields."""
    enc = encoding_for(rel, seed)
    atomic_write_bytes(out / rel, png_bytes(apply_encoding(image, Encoding(enc["encoding"], enc["quality"]))))
    return enc


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def load_chw(path: Path) -> np.ndarray:
    """uint8 CHW, the layout the image-to-image generators take."""
    return np.ascontiguousarray(np.asarray(load_rgb(path), dtype=np.uint8).transpose(2, 0, 1))
