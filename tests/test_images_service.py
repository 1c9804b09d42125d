"""The image service beyond the GAN basics: prompts that pick a class, local diffusers pipelines
(`brushpen models add`), A1111-style PNG metadata read back by `brushpen image info`, seed walks."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen.errors import BadInput, BadParameter, UnsafeWeights
from brushpen.gan.pipeline import StyleGANPipeline
from brushpen.generators.images import (ImageRequest, WalkRequest, format_parameters, generate_images,
                                        image_models, read_png_settings, seed_walk)
from brushpen.safety import credentials
from brushpen.store import link_model, list_models
from conftest import PYTHON, save_tiny_sd_pipeline, subprocess_env, tiny_generator


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def store(weights_store: Path, brushpen_home: Path) -> Path:
    StyleGANPipeline(tiny_generator()).save_pretrained(weights_store / "gan" / "shapes")
    return weights_store


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


def test_prompt_word_selects_the_class(store: Path) -> None:
    imgs = generate_images(ImageRequest(model="shapes", n=3, seed=4, prompt="draw me a flag"))
    assert [i.settings["label"] for i in imgs] == ["Flags"] * 3
    by_label = generate_images(ImageRequest(model="shapes", n=3, seed=4, label="Flags"))
    assert all(np.array_equal(arr(a.image), arr(b.image)) for a, b in zip(imgs, by_label))
    with pytest.raises(BadParameter, match="Circles, Squares, Flags"):
        generate_images(ImageRequest(model="shapes", prompt="spaceship"))


def test_png_carries_a1111_parameters_and_exact_settings(store: Path) -> None:
    img = generate_images(ImageRequest(model="shapes", seed=9, truncation_psi=0.7, mix_seed=3, mix_cutoff=2))[0]
    data = img.png_bytes()
    with Image.open(io.BytesIO(data)) as im:
        params = im.info["parameters"]
    assert "Seed: 9" in params and "Truncation psi: 0.7" in params and "Style mix seed: 3" in params
    assert "Model: shapes" in params and "Backend: torch" in params and "Version: " in params
    back = read_png_settings(data)
    assert back == json.loads(json.dumps(img.settings))
    again = generate_images(ImageRequest(**{k: back[k] for k in ImageRequest.__dataclass_fields__}))[0]
    assert np.array_equal(arr(again.image), arr(img.image))  # re-running the read-back settings
    assert format_parameters(back) == params


def test_every_image_carries_the_watermark(store: Path, sd_dir: Path) -> None:
    from brushpen.safety.watermark import extract, model_tag, payload_for

    link_model(sd_dir, "diffusers", "tiny")
    StyleGANPipeline(tiny_generator(resolution=32)).save_pretrained(store / "gan" / "shapes32")
    small = generate_images(ImageRequest(model="shapes", seed=1))[0]   # 16 px: too small to mark
    assert small.image.size == (16, 16)  # made, unmarked: the checker reports too small to read
    for req in (ImageRequest(model="shapes32", n=2, seed=1),
                ImageRequest(model="diffusers/tiny", n=1, seed=2, prompt="a cat", steps=2)):
        for img in generate_images(req):
            back = Image.open(io.BytesIO(img.png_bytes()))
            found = extract(back)
            assert found.found and found.payload == payload_for(read_png_settings(img.png_bytes()))
            assert found.payload.model == model_tag(img.settings["model"])


def test_read_png_settings_of_foreign_and_broken_files(tmp_path: Path) -> None:
    plain = io.BytesIO()
    Image.new("RGB", (4, 4)).save(plain, format="PNG")
    assert read_png_settings(plain.getvalue()) == {}
    with pytest.raises(BadInput):
        read_png_settings(b"\x89PNG\r\n\x1a\n not really")


def test_seed_walk_ends_on_the_seed_images(store: Path) -> None:
    data = seed_walk(WalkRequest(model="shapes", seed_a=5, seed_b=6, frames=4, format="webp"))
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 4 + 2  # there and back
        im.seek(0)
        first = arr(im)
        im.seek(3)
        last = arr(im)
    a, b = generate_images(ImageRequest(model="shapes", n=2, seed=5))
    # A 2-seed request draws seeds 5 and 6: the walk's end frames are those images, up to the
    # watermark (a different payload per frame, a few levels per pixel).
    assert np.abs(first - arr(a.image)).mean() < 4 and np.abs(last - arr(b.image)).mean() < 4
    far = arr(generate_images(ImageRequest(model="shapes", seed=6))[0].image)
    assert np.abs(first - far).mean() > 4 * np.abs(first - arr(a.image)).mean()
    with pytest.raises(BadParameter):
        seed_walk(WalkRequest(model="shapes", frames=1))


def test_diffusers_pipeline_joins_the_store(store: Path, sd_dir: Path) -> None:
    link_model(sd_dir, "diffusers", "tiny")
    assert [m.ref for m in list_models()] == ["gan/shapes", "diffusers/tiny"]
    info = {m.name: m for m in image_models()}
    assert info["diffusers/tiny"].kind == "diffusers" and info["diffusers/tiny"].resolution == 32
    assert "euler-a" in info["diffusers/tiny"].schedulers and info["shapes"].class_names[2] == "Flags"
    steps: list[tuple[int, int]] = []
    req = ImageRequest(model="diffusers/tiny", n=2, seed=5, prompt="a red cat", negative_prompt="blur",
                       steps=3, guidance=5.0, scheduler="euler-a")
    imgs = generate_images(req, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (6, 6) and len(steps) == 6
    assert imgs[0].image.size == (32, 32) and arr(imgs[0].image).std() > 1
    again = generate_images(ImageRequest(**{**req.__dict__, "n": 1, "seed": 6}))[0]
    assert np.array_equal(arr(again.image), arr(imgs[1].image))  # image i is seed S+i
    other = generate_images(ImageRequest(**{**req.__dict__, "n": 1, "scheduler": "ddim"}))[0]
    assert not np.array_equal(arr(other.image), arr(imgs[0].image))
    with Image.open(io.BytesIO(imgs[0].png_bytes())) as im:
        assert im.info["parameters"].startswith("a red cat\nNegative prompt: blur\nSteps: 3, Sampler: euler-a")
    cred = credentials.read(imgs[0].png_bytes())   # diffusers images are signed like the GAN's
    assert cred["state"] == "valid" and cred["ai_generated"] and cred["model"]["family"] == "diffusers"
    assert cred["model"]["name"] == "diffusers/tiny" and len(cred["model"]["weights_sha256"]) == 64
    with pytest.raises(BadParameter, match="give a prompt"):
        generate_images(ImageRequest(model="diffusers/tiny"))
    with pytest.raises(BadParameter, match="multiple of"):
        generate_images(ImageRequest(model="diffusers/tiny", prompt="x", width=33))
    with pytest.raises(BadParameter, match="unknown scheduler"):
        generate_images(ImageRequest(model="diffusers/tiny", prompt="x", scheduler="magic"))
    with pytest.raises(BadInput, match="already in the store"):
        link_model(sd_dir, "diffusers", "tiny")


def test_pickle_only_pipeline_is_refused(tmp_path: Path, sd_dir: Path, store: Path) -> None:
    bad = tmp_path / "pickled"
    shutil.copytree(sd_dir, bad)
    for f in (bad / "unet").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(UnsafeWeights):
        link_model(bad, "diffusers", "pickled")


def test_cli_add_generate_info(tmp_path: Path, sd_dir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    """`generate` runs as its own process, as a user runs it; the quick commands run through the
    same `main` in this process (a fresh process costs ~10 s of imports each on this box)."""
    from brushpen.cli.main import main

    store, home = tmp_path / "store", tmp_path / "home"
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(store))
    monkeypatch.setenv("BRUSHPEN_HOME", str(home))

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = cli("models", "add", str(sd_dir), "--name", "tiny")
    assert code == 0, err
    assert any(line.split()[:2] == ["diffusers", "tiny"] for line in cli("models", "list")[1].splitlines())
    out = tmp_path / "out"
    gen = subprocess.run([PYTHON, "-m", "brushpen.cli.main", "image", "generate", "--model", "diffusers/tiny",
                          "--prompt", "a lighthouse", "--steps", "2", "--n", "1", "--seed", "3", "--scheduler",
                          "dpm++2m", "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env=subprocess_env(BRUSHPEN_WEIGHTS=str(store), BRUSHPEN_HOME=str(home)))
    assert gen.returncode == 0, gen.stderr
    png = out / "diffusers-tiny-seed3.png"
    info = cli("image", "info", str(png))[1]
    assert info.startswith("a lighthouse\nSteps: 2, Sampler: dpm++2m") and "Seed: 3" in info
    assert json.loads(cli("image", "info", str(png), "--json")[1])["prompt"] == "a lighthouse"
    code, _, err = cli("image", "generate", "--model", "diffusers/tiny", "--out", str(out))
    assert code == 2 and "give a prompt" in err and "Traceback" not in err
    code, _, err = cli("models", "add", str(tmp_path / "nothing-here"))
    assert code == 2 and "model_index.json" in err
