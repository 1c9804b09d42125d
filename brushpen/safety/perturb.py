"""The everyday changes an image suffers after it leaves the studio: PNG and JPEG re-encoding and
resizing. The watermark benchmark and tests measure robustness against these, and the detector's
evaluation uses the same ones ("JPEG 75, resize 0.5×, and both"), so every figure means the same."""

from __future__ import annotations

import io
from typing import Callable

from PIL import Image


def png_roundtrip(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue())).convert(image.mode)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG with Pillow's defaults (4:2:0 chroma), as most sites and apps do."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Resize by `factor` with bicubic resampling (antialiased when shrinking)."""
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.BICUBIC)


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "png": png_roundtrip,
    "jpeg90": lambda im: jpeg(im, 90),
    "jpeg75": lambda im: jpeg(im, 75),
    "resize0.5": lambda im: rescale(im, 0.5),
    "resize2": lambda im: rescale(im, 2.0),
    "resize0.5+jpeg75": lambda im: jpeg(rescale(im, 0.5), 75),
}
