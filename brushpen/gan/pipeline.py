"""`StyleGANPipeline`: the diffusers-style front door to a trained generator.

    pipe = StyleGANPipeline.from_pretrained("weights/gan/emoji64")
    images = pipe(num_images=4, generator=torch.Generator().manual_seed(7), truncation_psi=0.7)

The store keeps a generator as one flat folder (config.json + safetensors), so this pipeline
loads and saves that folder directly rather than diffusers' nested `model_index.json` layout.
Seeds are deterministic: z, labels and noise all come from the one generator passed in.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from brushpen.errors import BadParameter
from brushpen.gan.networks import StyleGANGenerator


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8."""
    x = (images.clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: list[Image.Image], cols: int | None = None) -> Image.Image:
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


class StyleGANPipeline(DiffusionPipeline):
    def __init__(self, generator: StyleGANGenerator):
        super().__init__()
        self.register_modules(generator=generator)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> "StyleGANPipeline":
        return cls(StyleGANGenerator.from_pretrained(path, **kwargs).eval())

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        self.generator.save_pretrained(path, **kwargs)

    @property
    def class_names(self) -> list[str]:
        return list(self.generator.config.class_names or [])

    def label_index(self, label: int | str | None) -> int | None:
        """A class by index or by (case-insensitive, partial) name, e.g. 'flag' -> 'Flags'."""
        if self.generator.num_classes == 0:
            if label is not None:
                raise BadParameter("this model is unconditional: it takes no class label")
            return None
        if label is None:
            return None
        if isinstance(label, int) or str(label).isdigit():
            idx = int(label)
            if not 0 <= idx < self.generator.num_classes:
                raise BadParameter(f"class {idx} out of range 0..{self.generator.num_classes - 1}")
            return idx
        word = str(label).strip().lower()
        names = self.class_names
        for i, name in enumerate(names):
            parts = [p.strip() for p in name.lower().replace("&", ",").split(",")]
            if word == name.lower() or any(p.rstrip("s") == word.rstrip("s") for p in parts if p):
                return i
        raise BadParameter(f"unknown class '{label}'. Classes: {', '.join(names)}")

    @torch.no_grad()
    def generate_tensor(self, num_images: int = 1, generator: torch.Generator | None = None,
                        truncation_psi: float = 1.0, label: int | str | None = None,
                        mix_generator: torch.Generator | None = None, mix_cutoff: int | None = None,
                        noise_mode: str = "random") -> torch.Tensor:
        G = self.generator
        if num_images < 1:
            raise BadParameter("num_images must be at least 1")
        if not 0.0 <= truncation_psi <= 2.0:
            raise BadParameter("truncation_psi must lie in [0, 2]")
        if mix_cutoff is not None and not 0 < mix_cutoff < G.num_ws:
            raise BadParameter(f"style-mix crossover must lie in 1..{G.num_ws - 1}")
        device = G.mapping.w_avg.device
        z = torch.randn(num_images, G.z_dim, generator=generator).to(device)
        labels = None
        idx = self.label_index(label)  # also refuses a label for an unconditional model
        if G.num_classes:
            labels = torch.full((num_images,), idx, dtype=torch.long) if idx is not None else \
                torch.randint(0, G.num_classes, (num_images,), generator=generator)
            labels = labels.to(device)
        mix_z = torch.randn(num_images, G.z_dim, generator=mix_generator).to(device) \
            if mix_generator is not None else None
        ws = G.map(z, labels, truncation_psi, mix_z=mix_z, mix_cutoff=mix_cutoff)
        return G.synthesis(ws, noise_mode=noise_mode, generator=generator)

    def __call__(self, num_images: int = 1, generator: torch.Generator | None = None,
                 truncation_psi: float = 1.0, label: int | str | None = None,
                 mix_generator: torch.Generator | None = None, mix_cutoff: int | None = None,
                 noise_mode: str = "random", output_type: str = "pil") -> list[Image.Image] | np.ndarray:
        images = to_uint8(self.generate_tensor(num_images, generator, truncation_psi, label,
                                               mix_generator, mix_cutoff, noise_mode))
        return images if output_type == "np" else [Image.fromarray(a) for a in images]
