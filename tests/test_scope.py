"""The checker's out-of-scope gate: photographs (and smooth fakes of them) pass, graphics don't."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from brushpen.safety.scope import ScopeConfig, check_scope, scope_statistics


def photo_like(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A 1/f-ish scene with sensor noise: smooth structure, noisy pixels, as a camera gives."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 60 * np.sin(xx / 37 + c) * np.cos(yy / 23 - c) for c in range(3)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))


def emoji_like() -> Image.Image:
    im = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((6, 6, 58, 58), fill=(255, 204, 0), outline=(200, 140, 0))
    d.ellipse((20, 22, 26, 30), fill=(60, 40, 20))
    d.ellipse((38, 22, 44, 30), fill=(60, 40, 20))
    d.arc((18, 28, 46, 50), 20, 160, fill=(60, 40, 20), width=3)
    return im


def text_page() -> Image.Image:
    im = Image.new("RGB", (640, 240), (250, 250, 250))
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=18)
    for i in range(8):
        d.text((16, 10 + 28 * i), "Quarterly results are in; revenue rose 12% on strong demand.", fill=(20, 20, 20),
               font=font)
    return im


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_photographs_and_smooth_fakes_of_them_stay_in_scope() -> None:
    for seed in range(3):
        im = photo_like(seed)
        assert check_scope(im).in_scope, check_scope(im).stats
        assert check_scope(jpeg(im, 75)).in_scope
        # a generator's or upscaler's smooth output: half size, back up, JPEG 75
        up = jpeg(im.resize((240, 180), Image.LANCZOS).resize(im.size, Image.BICUBIC), 75)
        result = check_scope(up)
        assert result.in_scope and result.reason is None, result.stats


def test_emoji_text_and_flat_graphics_are_out_of_scope_with_a_reason() -> None:
    for im in (emoji_like(), text_page(), Image.new("RGB", (200, 100), (30, 90, 200))):
        result = check_scope(im)
        assert not result.in_scope
        assert result.reason.startswith("not a photograph") and "%" in result.reason
    stats = scope_statistics(text_page())
    assert stats["flat"] > 0.6 and stats["mode"] > 0.6


def test_statistics_are_measured_on_a_bounded_nearest_copy() -> None:
    """Size does not move the statistics of a flat graphic (nearest keeps exact values), and a huge
    image costs what a work_side one does."""
    small, big = emoji_like(), emoji_like().resize((2048, 2048), Image.NEAREST)
    a, b = scope_statistics(small), scope_statistics(big)
    assert abs(a["mode"] - b["mode"]) < 0.02
    assert b["flat"] >= a["flat"] - 0.02
    assert ScopeConfig().work_side <= 512
    tiny = Image.new("RGB", (1, 1))
    assert scope_statistics(tiny) == {"flat": 0.0, "mode": 0.0}
