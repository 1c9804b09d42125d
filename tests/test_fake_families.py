"""The fake families of issue 16 (dcgan, ddpm, vae, sr-shuffle, sr-interp, inpaint, emoji) on the
tiny synthetic real set of test_fakes.py, with budgets of a few steps: their files, manifest rows
and masks, the DCGAN's exact resume, the SR networks' shapes and the DDPM sampler's seeding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_fakes import SIZE, _cfg, _real_set

from brushpen.cli.main import main
from brushpen.safety.fake_models import FakeModelConfig, ddpm_sample, small_unet, super_resolve, train_fake_model
from brushpen.safety.fake_nets import DCGANGenerator, InterpSR, PixelShuffleSR
from brushpen.safety.fakes import ROW_KEYS, build_fakes

NEW = ("dcgan", "ddpm", "vae", "sr-shuffle", "sr-interp", "inpaint", "emoji")
GENERATORS = {"dcgan": {"dcgan-tconv"}, "ddpm": {"ddpm16-ancestral3"}, "vae": {"vae-bilinear"},
              "sr-shuffle": {"sr-shuffle-x2", "sr-shuffle-x4"}, "sr-interp": {"sr-bilinear-x2", "sr-bilinear-x4"},
              "inpaint": {"inpaint:ddim"}, "emoji": {"emoji:emoji64"}}
FROM_HOSTS = {"vae", "sr-shuffle", "sr-interp", "inpaint", "emoji"}
LOCAL = {"inpaint", "emoji"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("families")
    _real_set(tmp / "real")
    cfg = _cfg(tmp, families=NEW, count=6, real_copy=False)
    card = build_fakes(cfg)
    rows = [json.loads(line) for line in (cfg.out / "manifest.jsonl").read_text().splitlines()]
    return cfg, card, rows


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_each_family_writes_its_files_and_rows(built):
    cfg, card, rows = built
    assert {r["family"] for r in rows} == set(NEW)
    for family in NEW:
        mine = [r for r in rows if r["family"] == family]
        # train gets --count 6, val/test the same share of their real size (8/24 * 6 = 2)
        assert {s: sum(r["split"] == s for r in mine) for s in ("train", "val", "test")} == \
            {"train": 6, "val": 2, "test": 2}, family
        assert {r["generator"] for r in mine} == GENERATORS[family]
        for r in mine:
            assert set(r) == set(ROW_KEYS) and r["label"] == 1 and r["path"].startswith(f"{family}/{r['split']}/")
            assert _pixels(cfg.out / r["path"]).shape == (SIZE, SIZE, 3)
            if family in FROM_HOSTS:
                assert r["source"].split("/")[0] == r["split"], r   # the host's split is inherited
            else:
                assert r["source"] is None
            assert (r["mask"] is not None) == (family in LOCAL)
        training = card["families"][family]["training"]
        assert training["state"] and "sampler" in training, family
        if family != "emoji":
            assert training["commands"][0].startswith("brushpen detect train-fake"), family
    assert "not trained here" in card["families"]["emoji"]["training"]["state"]
    assert "| emoji |" in (cfg.out / "card.md").read_text()


def test_new_generators_trained_their_budget(built):
    cfg, _, _ = built
    for kind in ("dcgan", "vae", "sr-shuffle", "sr-interp", "diffusion"):
        state = json.loads((cfg.models / kind / "train.json").read_text())
        assert state["step"] == 2 and (cfg.models / kind / "model" / "config.json").is_file(), kind
    assert {p.stem for p in (cfg.models / "dcgan" / "checkpoint").glob("*.safetensors")} >= \
        {"G", "D", "opt_G", "opt_D", "rng"}


@pytest.mark.parametrize("family", sorted(LOCAL))
def test_local_fakes_are_real_outside_their_masks(built, family):
    cfg, _, rows = built
    mine = [r for r in rows if r["family"] == family]
    assert any(r["encoding"] == "png" for r in mine)   # seeded: at least one lossless row to check exactly
    for r in mine:
        mask = np.asarray(Image.open(cfg.out / r["mask"]))
        assert r["mask"].startswith(f"{family}/{r['split']}/masks/") and mask.shape == (SIZE, SIZE)
        assert abs(mask.mean() / 255 - r["mask_area"]) < 1e-3 and 0 < mask.max() <= 255
        if family == "inpaint":
            assert 0.05 <= r["mask_area"] <= 0.40, r
            assert len(np.unique(mask)) > 2   # feathered, not hard-edged
        if r["encoding"] == "png":
            fake, real = _pixels(cfg.out / r["path"]), _pixels(cfg.real / r["source"])
            assert np.array_equal(fake[mask == 0], real[mask == 0])
            assert not np.array_equal(fake[mask > 0], real[mask > 0])


def test_dcgan_resume_is_exact(tmp_path):
    _real_set(tmp_path / "real")

    def run(out: str, steps: int) -> None:
        train_fake_model(FakeModelConfig(kind="dcgan", data=tmp_path / "real" / "train", out=tmp_path / out,
                                         steps=steps, batch=4, resolution=SIZE, snap_steps=2, threads=1),
                         log=lambda m: None)

    run("straight", 4)
    run("resumed", 2)
    run("resumed", 4)
    for part in ("G", "D", "opt_G", "opt_D"):
        a = load_file(str(tmp_path / "straight" / "checkpoint" / f"{part}.safetensors"))
        b = load_file(str(tmp_path / "resumed" / "checkpoint" / f"{part}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    torch.manual_seed(0)   # the run's seed: the same initial weights, which 4 steps must have moved
    init = DCGANGenerator(resolution=SIZE).state_dict()
    trained = load_file(str(tmp_path / "resumed" / "model" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(init["net.0.weight"], trained["net.0.weight"])


@pytest.mark.parametrize("net", [PixelShuffleSR(), InterpSR()], ids=["shuffle", "interp"])
@pytest.mark.parametrize("size", [32, 64])
def test_sr_output_is_the_patch_size(net, size):
    patches = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    for scale in (2, 4):
        out = super_resolve(net.eval(), patches, scale)
        assert out.shape == (2, 3, size, size) and out.abs().max() <= 1


def test_ddpm_sampling_is_stochastic_but_seeded():
    torch.manual_seed(0)
    unet = small_unet(16).eval()

    def draw(seed: int) -> torch.Tensor:
        return ddpm_sample(unet, 2, torch.Generator().manual_seed(seed), steps=4)

    a, b, c = draw(1), draw(1), draw(2)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert (a - c).abs().mean() > 0.05


def test_cli_train_fake_takes_the_new_kinds(tmp_path):
    _real_set(tmp_path / "real")
    for kind in ("vae", "sr-interp"):
        assert main(["detect", "train-fake", "--kind", kind, "--data", str(tmp_path / "real" / "train"),
                     "--out", str(tmp_path / kind), "--steps", "1", "--batch", "2", "--threads", "1"]) == 0
        assert json.loads((tmp_path / kind / "train.json").read_text())["step"] == 1
