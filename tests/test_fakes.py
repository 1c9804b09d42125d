"""`brushpen detect build-fakes` on a tiny synthetic real set: the first four families (stylegan,
diffusion, decoder, splice), splits, masks, re-encoding, manifest schema, resume, and the fake
generators' trainers (a few steps each). The issue-16 families: test_fake_families.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brushpen.safety.fake_models import FakeModelConfig, train_fake_model
from brushpen.safety.fakes import ROW_KEYS, FakesConfig, build_fakes, encoding_for
from brushpen.safety.splice import draw_mask, paste

SIZE = 32
N_REAL = {"train": 24, "val": 8, "test": 8}


def _real_set(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in N_REAL.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            # smooth colour ramps plus texture: something photo-like for a JPEG to change
            yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
            base = np.stack([xx, yy, (xx + yy) / 2], -1) * rng.uniform(80, 200, 3)
            img = (base + rng.normal(0, 12, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / split / f"p{i:03d}.png")
    return root


ORIGINAL = ("stylegan", "diffusion", "decoder", "splice")  # the issue-16 families: test_fake_families.py


def _cfg(tmp: Path, families: tuple[str, ...] = ORIGINAL, **kw) -> FakesConfig:
    settings = dict(count=6, seed=3, stylegan_kimg=0.016, stylegan_channels=(32, 16, 16, 8), diffusion_steps=2,
                    diffusion_resolution=16, ddim_steps=2, decoder_steps=2, dcgan_steps=2, vae_steps=2,
                    sr_steps=2, ddpm_steps=3, train_batch=8, batch=4, threads=1, progress=False)
    return FakesConfig(real=tmp / "real", out=tmp / "fakes", models=tmp / "models", families=families,
                       **{**settings, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("fakes")
    _real_set(tmp / "real")
    cfg = _cfg(tmp)
    card = build_fakes(cfg)
    rows = [json.loads(line) for line in (cfg.out / "manifest.jsonl").read_text().splitlines()]
    return cfg, card, rows


def test_manifest_schema_counts_and_sizes(built):
    cfg, card, rows = built
    assert all(set(r) == set(ROW_KEYS) for r in rows)
    by_family: dict[str, dict[str, int]] = {}
    for r in rows:
        by_family.setdefault(r["family"], {}).setdefault(r["split"], 0)
        by_family[r["family"]][r["split"]] += 1
        assert r["label"] == int(r["family"] != "real")
        with Image.open(cfg.out / r["path"]) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB" and im.format == "PNG"
        assert r["path"].startswith(f"{r['family']}/{r['split']}/")
    assert by_family["real"] == N_REAL
    # train gets --count, val/test the same share of their real size (8/24 * 6 = 2)
    for family in ("stylegan", "diffusion", "decoder", "splice"):
        assert by_family[family] == {"train": 6, "val": 2, "test": 2}, family
        assert card["families"][family]["counts"] == {"train": 6, "val": 2, "test": 2}
    assert {r["generator"] for r in rows if r["family"] == "decoder"} == {"ae-tconv", "ae-upsample"}
    assert card["rows"] == len(rows)
    assert "kimg" in card["families"]["stylegan"]["training"]["state"]
    assert card["families"]["diffusion"]["training"]["state"].startswith("2 steps")
    assert (cfg.out / "card.md").read_text().count("|") > 20


def test_splits_follow_the_source_patch(built):
    _, _, rows = built
    for r in rows:
        if r["family"] in ("decoder", "splice", "real"):
            assert r["source"].split("/")[0] == r["split"], r
        else:
            assert r["source"] is None and r["mask"] is None


def test_fake_generators_trained_their_budget(built):
    cfg, _, _ = built
    for kind in ("diffusion", "decoder-tconv", "decoder-upsample"):
        state = json.loads((cfg.models / kind / "train.json").read_text())
        assert state["step"] == 2 and state["command"].startswith("brushpen detect train-fake")
        assert (cfg.models / kind / "model" / "config.json").is_file()
    metrics = json.loads((cfg.models / "stylegan-photos" / "metrics.json").read_text())
    assert metrics["kimg"] >= 0.016


def test_reencoding_mix_is_applied_to_real_and_fake(built):
    cfg, _, rows = built
    for family in ("real", "stylegan", "splice"):
        encs = {r["encoding"] for r in rows if r["family"] == family}
        assert encs == {"jpeg", "png"}, family
    for r in rows:
        assert {k: r[k] for k in ("encoding", "quality")} == encoding_for(r["path"], cfg.seed)
        assert (r["quality"] is None) == (r["encoding"] == "png")
        if r["encoding"] == "jpeg":
            assert 70 <= r["quality"] <= 95
    for r in (r for r in rows if r["family"] == "real"):
        copy = np.asarray(Image.open(cfg.out / r["path"]).convert("RGB"), np.int16)
        orig = np.asarray(Image.open(cfg.real / r["source"]).convert("RGB"), np.int16)
        if r["encoding"] == "png":
            assert np.array_equal(copy, orig)
        else:
            assert np.abs(copy - orig).mean() > 0.5  # the JPEG round trip really happened


def test_splice_masks_match_the_pasted_region(built):
    cfg, _, rows = built
    splices = [r for r in rows if r["family"] == "splice"]
    assert len({r["generator"].split(":")[1].split("-")[0] for r in splices}) >= 2  # donors vary
    for r in splices:
        mask = np.asarray(Image.open(cfg.out / r["mask"]))
        assert r["mask"].startswith(f"splice/{r['split']}/masks/") and mask.shape == (SIZE, SIZE)
        assert 0.1 <= r["mask_area"] <= 0.55 and abs(mask.mean() / 255 - r["mask_area"]) < 1e-3
        if r["encoding"] == "png":  # lossless: outside the mask is exactly the real patch
            fake = np.asarray(Image.open(cfg.out / r["path"]).convert("RGB"))
            real = np.asarray(Image.open(cfg.real / r["source"]).convert("RGB"))
            assert np.array_equal(fake[mask == 0], real[mask == 0])
            assert not np.array_equal(fake[mask > 0], real[mask > 0])


def test_paste_and_masks_over_many_seeds():
    real = Image.fromarray(np.full((64, 64, 3), 10, np.uint8))
    fake = Image.fromarray(np.full((64, 64, 3), 240, np.uint8))
    shapes, softs = set(), set()
    for seed in range(60):
        mask, info = draw_mask(64, random.Random(seed))
        shapes.add(info["shape"])
        softs.add(info["soft"])
        m = np.asarray(mask)
        out = np.asarray(paste(real, fake, mask))
        assert np.all(out[m == 0] == 10) and np.all(out[m == 255] == 240)
        assert 0.08 <= info["mask_area"] <= 0.52, info
    assert shapes == {"rect", "ellipse", "blob"} and softs == {True, False}


def test_rebuild_skips_finished_work_and_is_deterministic(built, tmp_path):
    cfg, _, rows = built
    victim = next(r for r in rows if r["family"] == "decoder")
    before = (cfg.out / victim["path"]).read_bytes()
    (cfg.out / victim["path"]).unlink()
    (cfg.out / ".work" / "decoder.json").unlink()
    card = build_fakes(cfg)
    assert (cfg.out / victim["path"]).read_bytes() == before
    assert set(card["families"]) >= {"real", "stylegan", "diffusion", "decoder", "splice"}
    again = [json.loads(line) for line in (cfg.out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(again, key=lambda r: r["path"]) == sorted(rows, key=lambda r: r["path"])

    # Another build process writing over card.json (one that built other families) loses nothing:
    # each family's entry lives in its record too, and the next run writes the whole card again.
    full = json.loads((cfg.out / "card.json").read_text())
    (cfg.out / "card.json").write_text(json.dumps({**full, "families": {"real": full["families"]["real"]}}))
    card = build_fakes(cfg)
    assert card["families"] == full["families"] and list(card["families"])[:3] == ["real", "stylegan", "diffusion"]


def test_fake_model_training_resumes(tmp_path):
    _real_set(tmp_path / "real")
    logs: list[str] = []
    cfg = FakeModelConfig(kind="decoder-upsample", data=tmp_path / "real" / "train", out=tmp_path / "ae",
                          steps=2, batch=4, resolution=SIZE, snap_steps=1, threads=1)
    first = train_fake_model(cfg, log=logs.append)
    cfg.steps = 3
    second = train_fake_model(cfg, log=logs.append)
    assert first["step"] == 2 and second["step"] == 3 and "resumed decoder-upsample at step 2" in logs


def test_cli_build_fakes_one_family(built, tmp_path):
    from brushpen.cli.main import main

    cfg, _, _ = built
    # reuses the trained autoencoders in the shared models folder: only generation runs here
    assert main(["detect", "build-fakes", "--real", str(cfg.real), "--out", str(tmp_path / "o"),
                 "--models", str(cfg.models), "--families", "decoder", "--count", "4",
                 "--decoder-steps", "2", "--no-real-copy"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 + 1 + 1 and {r["family"] for r in rows} == {"decoder"}
