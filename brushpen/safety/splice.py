"""Local fakes: a generated region pasted into a real photo patch through a mask.

`draw_mask` makes one seeded mask, a rectangle, an ellipse or a random blob covering a drawn
share of the patch (15–50% by default), hard-edged or feathered; `draw_mask_within` redraws it
until the feathered mask itself covers a given share (the inpainting family's). `feather` softens
any hard region inwards, and `foreground_mask` finds an object on a plain background (an emoji).
`paste` blends `mask * fake + (1 - mask) * real`, so every pixel where the mask is 0 is exactly
the real patch: the mask saved next to the patch is the ground truth a localisation head trains on.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import binary_fill_holes

from brushpen.errors import BadParameter

SHAPES = ("rect", "ellipse", "blob")


def _hard_mask(shape: str, size: int, area: float, rng: random.Random) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "blob":
        # A smooth random field from a few Gaussian bumps, thresholded at the quantile that
        # leaves `area` of the pixels inside: an irregular, mostly connected region.
        field = np.zeros((size, size), np.float32)
        cx, cy = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size
        for _ in range(rng.randint(3, 6)):
            bx, by = cx + rng.gauss(0, size * 0.15), cy + rng.gauss(0, size * 0.15)
            s = rng.uniform(0.08, 0.2) * size
            field += np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s))
        return field > np.quantile(field, 1 - area)
    aspect = rng.uniform(0.5, 2.0)
    if shape == "rect":
        w = min(size, np.sqrt(area * size * size * aspect))
        h = min(size, area * size * size / w)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        return (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
    a = min(size / 2, np.sqrt(area * size * size * aspect / np.pi))  # semi-axes with pi*a*b = area
    b = min(size / 2, area * size * size / (np.pi * a))
    cx, cy = rng.uniform(a, size - a), rng.uniform(b, size - b)
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1


def draw_mask(size: int, rng: random.Random, area: tuple[float, float] = (0.15, 0.5),
              soft_share: float = 0.5) -> tuple[Image.Image, dict]:
    """A mode-"L" mask (255 = generated) and its description: shape, soft, area (mean of mask)."""
    shape = rng.choice(SHAPES)
    hard = _hard_mask(shape, size, rng.uniform(*area), rng)
    soft = rng.random() < soft_share
    mask = feather(hard, rng.uniform(1.0, 3.0)) if soft else Image.fromarray((hard * 255).astype(np.uint8), "L")
    m = np.asarray(mask, np.float32) / 255
    return mask, {"shape": shape, "soft": soft, "mask_area": round(float(m.mean()), 4)}


def draw_mask_within(size: int, rng: random.Random, area: tuple[float, float],
                     soft_share: float = 1.0, tries: int = 100) -> tuple[Image.Image, dict]:
    """`draw_mask`, redrawn until the mask's own area lies in `area`: feathering thins a region,
    so its drawn (hard) area alone does not bound the mask's."""
    for _ in range(tries):
        mask, info = draw_mask(size, rng, area, soft_share)
        if area[0] <= info["mask_area"] <= area[1]:
            return mask, info
    raise BadParameter(f"no {size}x{size} mask covering {area[0]:.0%}-{area[1]:.0%} in {tries} draws")


def feather(hard: np.ndarray, radius: float) -> Image.Image:
    """A mode-"L" mask from a boolean region, feathered inwards only: blurred, then zero outside
    the region, so "outside the mask" stays exactly real and the blend ramps up inside it."""
    mask = Image.fromarray((hard * 255).astype(np.uint8), "L")
    blurred = np.asarray(mask.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    return Image.fromarray(np.where(hard, blurred, 0).round().astype(np.uint8), "L")


def border_colour(image: Image.Image) -> np.ndarray:
    """The median RGB of the image's outermost pixels: its background, for an object shot on one."""
    a = np.asarray(image.convert("RGB"), np.float32)
    return np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), axis=0)


def foreground_mask(image: Image.Image, background: np.ndarray, tolerance: float = 24.0) -> np.ndarray:
    """Boolean HxW: the pixels differing from `background` by more than `tolerance` in some channel,
    holes filled (a white glyph on a blue key is part of the key, not background)."""
    a = np.asarray(image.convert("RGB"), np.float32)
    return binary_fill_holes(np.abs(a - background).max(axis=-1) > tolerance)


def paste(real: Image.Image, fake: Image.Image, mask: Image.Image) -> Image.Image:
    """mask * fake + (1 - mask) * real, in 8-bit RGB; exact where the mask is 0 or 255."""
    r = np.asarray(real.convert("RGB"), np.float32)
    f = np.asarray(fake.convert("RGB").resize(real.size, Image.LANCZOS), np.float32)
    m = np.asarray(mask, np.float32)[..., None] / 255
    return Image.fromarray((m * f + (1 - m) * r).round().clip(0, 255).astype(np.uint8), "RGB")
