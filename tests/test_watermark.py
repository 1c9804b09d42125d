"""The provenance watermark: round trips on generated and dataset emoji, robustness to JPEG and
resizing at the levels the issue states, no detections on unmarked images, and odd inputs."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.safety.perturb import PERTURBATIONS, jpeg, rescale
from brushpen.safety.watermark import (MIN_SIDE, N_BITS, Payload, embed, extract, model_tag,
                                       payload_for)
from conftest import CLASS_NAMES, shape_image

PAYLOAD = Payload(model=model_tag("emoji64"), image_id=0xC0FFEE42)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = (np.asarray(i.convert("RGB"), dtype=np.float64) for i in (a, b))
    return float(10 * np.log10(255.0**2 / np.mean((x - y) ** 2)))


@pytest.fixture(scope="module")
def emoji() -> list[Image.Image]:
    """40 dataset emoji when the set is built here, else emoji-like shapes on white."""
    files = sorted((get_settings().data_dir / "emoji64").glob("*.png"))
    if files:
        return [Image.open(p).convert("RGB") for p in random.Random(0).sample(files, 40)]
    rng = np.random.default_rng(0)
    return [shape_image(i % len(CLASS_NAMES), tuple(int(v) for v in rng.integers(0, 256, 3)), 64,
                        int(rng.integers(-8, 9))) for i in range(40)]


@pytest.fixture(scope="module")
def generated() -> list[Image.Image]:
    """Eight outputs of the shipped emoji64 GAN, through the image service."""
    from brushpen.generators.images import ImageRequest, generate_images

    return [g.image for g in generate_images(ImageRequest(model="emoji64", n=8, seed=11))]


def test_payload_bits_round_trip_and_crc_rejects_flips() -> None:
    bits = PAYLOAD.to_bits()
    assert bits.shape == (N_BITS,) and Payload.from_bits(bits) == PAYLOAD
    for i in range(N_BITS):   # CRC-16 and the magic byte catch every single-bit error
        flipped = bits.copy()
        flipped[i] ^= 1
        assert Payload.from_bits(flipped) is None
    with pytest.raises(BadParameter):
        Payload(model=2**16, image_id=0)
    assert model_tag("emoji64") == model_tag("emoji64") != model_tag("emoji65")


def test_generated_images_round_trip_exactly(generated: list[Image.Image]) -> None:
    for i, image in enumerate(generated):
        payload = Payload(model=model_tag("emoji64"), image_id=i * 1_000_003)
        marked = embed(image, payload)
        assert marked.size == image.size and marked.mode == "RGB"
        assert psnr(image, marked) > 37.5
        det = extract(PERTURBATIONS["png"](marked))
        assert det.found and det.payload == payload and det.bit_agreement == 1.0
        assert det.confidence > 0.9


def test_embedding_is_deterministic(generated: list[Image.Image]) -> None:
    settings = {"model": "emoji64", "seed": 11, "truncation_psi": 1.0}
    a, b = (embed(generated[0], payload_for(settings)) for _ in range(2))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert extract(a).payload == payload_for(dict(settings))
    assert payload_for({**settings, "seed": 12}) != payload_for(settings)


def test_dataset_emoji_survive_png_and_jpeg90(emoji: list[Image.Image]) -> None:
    exact_png, acc_jpeg = 0, []
    for image in emoji[:20]:
        marked = embed(image, PAYLOAD)
        exact_png += extract(PERTURBATIONS["png"](marked)).payload == PAYLOAD
        acc_jpeg.append(np.mean(extract(jpeg(marked, 90)).bits == PAYLOAD.to_bits()))
    assert exact_png == 20
    assert np.mean(acc_jpeg) >= 0.99   # the goal; measured 0.9996 on 500 (BENCHMARKS.md)


def test_jpeg75_and_resizes_keep_most_bits(emoji: list[Image.Image]) -> None:
    marked = [embed(image, PAYLOAD) for image in emoji[20:40]]
    bits = PAYLOAD.to_bits()

    def accuracy(perturb) -> float:
        return float(np.mean([np.mean(extract(perturb(m)).bits == bits) for m in marked]))

    assert accuracy(lambda m: jpeg(m, 75)) >= 0.97      # measured 0.988 on 500
    assert accuracy(lambda m: rescale(m, 0.5)) >= 0.97  # measured 0.990 on 500
    assert accuracy(lambda m: rescale(m, 2.0)) >= 0.999


def test_larger_and_non_square_images_round_trip() -> None:
    rng = np.random.default_rng(3)
    for w, h in [(32, 32), (96, 48), (300, 200), (1024, 1024)]:
        smooth = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        marked = embed(smooth, PAYLOAD)
        assert marked.size == (w, h)
        assert extract(jpeg(marked, 90)).payload == PAYLOAD


def test_a_mark_is_read_on_a_12_megapixel_copy_without_a_float_copy_of_it() -> None:
    """Large images are box-reduced before reading (a 36 MP float copy cost 430 MB): the mark of a
    512-px image enlarged to 4096 x 3072 and saved as JPEG 90 still reads."""
    rng = np.random.default_rng(8)
    smooth = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((512, 384), Image.BICUBIC)
    big = jpeg(embed(smooth, PAYLOAD).resize((4096, 3072), Image.BICUBIC), 90)
    tracemalloc.start()
    found = extract(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found.payload == PAYLOAD
    assert peak < 60 << 20, f"{peak / 2**20:.0f} MiB"   # the RGB image itself is 36 MiB; floats of it were 144


def _unmarked(n: int) -> list[Image.Image]:
    """Flat, gradient, shape and noise images at several sizes: none carries a mark."""
    rng = random.Random(5)
    out = []
    for i in range(n):
        side = rng.choice([32, 64, 100, 128])
        im = Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(rng.randint(0, 5)):
            x, y = rng.randrange(side), rng.randrange(side)
            box = (x, y, x + rng.randint(3, side), y + rng.randint(3, side))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        if i % 4 == 0:
            noise = np.random.default_rng(i).normal(0, rng.choice([2, 20]), (side, side, 3))
            im = Image.fromarray(np.clip(np.asarray(im) + noise, 0, 255).astype(np.uint8))
        out.append(im)
    return out


def test_unmarked_images_are_not_detected(emoji: list[Image.Image]) -> None:
    images = _unmarked(160) + emoji
    images += [embed(im, PAYLOAD, key=b"another studio") for im in emoji[:10]]   # a foreign key
    found = [extract(im).found for im in images]
    assert len(images) == 210 and sum(found) == 0
    assert np.mean([extract(im).confidence for im in emoji]) < 0.7   # about 0.5 by chance


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_other_modes(emoji: list[Image.Image], mode: str) -> None:
    source = emoji[0].convert(mode) if mode != "I;16" else emoji[0].convert("L").convert("I;16")
    if mode == "P":
        source.info["transparency"] = 0
    marked = embed(source, PAYLOAD)
    assert marked.mode == {"P": "RGBA", "I;16": "RGB", "CMYK": "RGB"}.get(mode, mode)
    if "A" in marked.mode:   # alpha is left exactly as it was
        assert np.array_equal(np.asarray(marked.getchannel("A")), np.asarray(source.convert("RGBA").getchannel("A")))
    assert extract(marked).payload == PAYLOAD


def test_bad_inputs() -> None:
    for size in [(MIN_SIDE - 1, 64), (64, 8), (1, 1)]:
        with pytest.raises(BadInput, match="at least"):
            embed(Image.new("RGB", size, "white"), PAYLOAD)
        with pytest.raises(BadInput, match="at least"):
            extract(Image.new("RGB", size, "white"))
    with pytest.raises(BadInput):
        extract(np.zeros((64, 64, 3), dtype=np.uint8))   # type: ignore[arg-type]
    flat = extract(Image.new("RGB", (64, 64), "white"))
    assert not flat.found and flat.payload is None and flat.bit_agreement is None


def test_cli_embed_and_read(tmp_path: Path, emoji: list[Image.Image], capsys: pytest.CaptureFixture) -> None:
    from brushpen.cli.main import main

    src = tmp_path / "in.png"
    emoji[0].save(src)
    assert main(["watermark", "embed", str(src), "--model", "emoji64", "--id", "77"]) == 0
    assert main(["watermark", "read", "--json", str(tmp_path / "in.marked.png"), str(src)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert '"found": true' in lines[-2] and '"image_id": 77' in lines[-2]
    assert '"found": false' in lines[-1]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["watermark", "read", str(tmp_path / "bad.png")]) == 2
    assert "not a readable image" in capsys.readouterr().out
