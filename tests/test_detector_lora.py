"""LoRA adapters for the detector: zero-init B is the identity, merged equals unmerged, a tiny
fine-tuning run raises the new family's AUC and lowers its loss, the adapter round-trips through the
store and the checker service, and broken / other-base / rank-mismatch adapters are refused.

Fixture: a tiny randomly initialised detector saved in a private store as `safety/detector`, whose
`train.json` points at an "old" family (bilinear-upsampled textures) for replay; the new family is
a plain folder of textures up-sampled with nearest + smoothing (`test_detector.fake_of(kind=1)`).
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detector import TINY, fake_of, texture

from brushpen.adapters import list_adapters, weights_sha256
from brushpen.errors import BadInput, BrokenModel, ModelNotFound
from brushpen.safety import lora
from brushpen.safety.calibrate import roc_auc
from brushpen.safety.detector import Calibration, Detector, save_detector, to_tensor
from brushpen.safety.detector_train import logits_of


def _images(folder: Path, n: int, rng: np.random.Generator, kind: int | None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = texture(rng) if kind is None else fake_of(texture(rng), kind)
        out.append(folder / f"{i:04d}.png")
        im.save(out[-1])
    return out


def _base_hash(folder: Path) -> str:
    """A hash over every file of the base folder itself (adapters/ aside)."""
    return weights_sha256([p for p in folder.iterdir() if p.is_file()])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lora")
    rng = np.random.default_rng(1)
    for split, n in (("train", 40), ("val", 16)):   # the base's own data, for replay
        _images(root / "old" / "real" / split, n, rng, None)
        _images(root / "old" / "fakes" / "bilinear" / split, n, rng, 0)
    new_fake = root / "new" / "fake"
    _images(new_fake, 50, rng, 1)
    _images(root / "new" / "real", 50, rng, None)
    test_real = np.stack([np.asarray(texture(rng)) for _ in range(40)])
    test_fake = np.stack([np.asarray(fake_of(texture(rng), 1)) for _ in range(40)])
    store = root / "weights"
    base = store / "safety" / "detector"
    torch.manual_seed(0)
    save_detector(Detector(TINY, Calibration(temperature=1.0, t_real=0.4, t_fake=0.6)), base)
    (base / "train.json").write_text(json.dumps({"config": {
        "real": [str(root / "old" / "real")], "fake": [str(root / "old" / "fakes")], "families": ["bilinear"],
        "exclude": []}}))
    return {"root": root, "store": store, "base": base, "new_fake": new_fake, "new_real": root / "new" / "real",
            "test": (np.concatenate([test_real, test_fake]), np.r_[np.zeros(40), np.ones(40)])}


@pytest.fixture
def env(setup: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(setup["store"]))
    monkeypatch.setenv("BRUSHPEN_HOME", str(tmp_path / "home"))
    return setup


def test_zero_b_is_the_base_and_merged_equals_unmerged() -> None:
    torch.manual_seed(0)
    base = Detector(TINY).eval()
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref_logit, ref_map = base(x)
        adapted = lora.add_lora(copy.deepcopy(base), rank=4)
        logit, where = adapted(x)
        assert torch.equal(logit, ref_logit) and torch.equal(where, ref_map)   # B = 0: bit-identical
        assert lora.trainable_params(adapted) == sum(v.numel() for v in lora.lora_state(adapted).values())
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        logit, where = adapted(x)
        merged = lora.merge_lora(adapted)
        m_logit, m_where = merged(x)
    assert (logit - ref_logit).abs().max() > 1e-3                       # the update does something
    assert (m_logit - logit).abs().max() < 1e-5 and (m_where - where).abs().max() < 1e-5
    assert set(merged.state_dict()) == set(base.state_dict())           # a plain detector again


def test_finetune_raises_new_family_auc_and_round_trips(env: dict) -> None:
    from brushpen.generators.checker import check_images
    from brushpen.safety.lora_train import DetectorFinetuneRequest, finetune

    base_hash = _base_hash(env["base"])
    images, labels = env["test"]
    events = []
    req = DetectorFinetuneRequest(fake=env["new_fake"], real=env["new_real"], out="nearest", rank=4, steps=50,
                                  batch=16, lr=1e-2, count=30, replay=0.25, replay_count=60, snap=25)
    result = finetune(req, events.append)
    assert result.ref == "detector:nearest"
    assert [e.step for e in events] == list(range(1, 51))
    losses = [e.loss for e in events]
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.05
    m = result.metrics
    assert m["train_images"] == {"fake": 30, "real": 30, "replay": 60}
    assert m["val_auc_new_after"] > max(0.85, m["val_auc_new_before"] + 0.2), m

    # The store: listed under its base, loaded by name, merged == unmerged, the base untouched.
    assert list_adapters(env["base"]) == ["nearest"]
    info = json.loads((result.path / "adapter.json").read_text())
    assert info["base_sha256"] == lora.base_sha256(env["base"]) and info["rank"] == 4
    merged, unmerged = lora.load_ref("detector:nearest"), lora.load_ref("detector:nearest", merge=False)
    before = logits_of(lora.load_ref("detector"), images)
    after = logits_of(merged, images)
    assert np.abs(after - logits_of(unmerged, images)).max() < 1e-5
    assert roc_auc(after, labels) > max(0.85, roc_auc(before, labels) + 0.2)
    assert merged.calibration.temperature == info["extra"]["calibration"]["temperature"]
    # The checker service serves `detector:NAME` with the adapter's calibration.
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(images[-1]).save(buf, format="PNG")
    (r,) = check_images([("x.png", buf.getvalue())], model="detector:nearest")
    with torch.no_grad():
        expect = merged.calibration.probability(float(merged(to_tensor(images[-1:]))[0][0]))
    assert abs(r.score - float(expect)) < 1e-5 and r.verdict == merged.calibration.verdict(r.score)
    assert _base_hash(env["base"]) == base_hash


def test_broken_other_base_and_rank_mismatch_are_refused(env: dict) -> None:
    from brushpen.generators.checker import load_model

    if not list_adapters(env["base"]):
        pytest.skip("needs the adapter of the fine-tuning test")
    good = env["base"] / "adapters" / "nearest"
    base_hash = _base_hash(env["base"])

    def variant(name: str, edit) -> str:
        folder = env["base"] / "adapters" / name
        shutil.copytree(good, folder, dirs_exist_ok=True)
        edit(folder)
        return f"detector:{name}"

    def set_info(**changes):
        def edit(folder: Path) -> None:
            info = json.loads((folder / "adapter.json").read_text())
            info.update(changes)
            (folder / "adapter.json").write_text(json.dumps(info))
        return edit

    cases = {
        variant("broken", lambda f: (f / lora.WEIGHTS).write_bytes(b"not safetensors")): "unreadable",
        variant("otherbase", set_info(base_sha256="0" * 64)): "other weights",
        variant("rank8", set_info(rank=8)): "rank mismatch",
        variant("badjson", lambda f: (f / "adapter.json").write_text("{")): "not a valid adapter",
    }
    for ref, words in cases.items():
        with pytest.raises(BrokenModel, match=words):
            load_model(ref)
    with pytest.raises(ModelNotFound, match="no adapter 'nope'"):
        load_model("detector:nope")
    assert _base_hash(env["base"]) == base_hash


def test_cli_trains_from_a_zip_and_refuses_a_zip_without_reals(env: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from brushpen.cli.main import main

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for kind, folder in (("fake", env["new_fake"]), ("real", env["new_real"])):
            for f in sorted(folder.glob("*.png"))[:6]:
                zf.write(f, f"upload/{kind}/{f.name}")
        zf.writestr("../evil.png", b"x")   # unsafe entries are skipped, never written
    args = ["finetune", "detector", "--fake", str(archive), "--real", str(archive), "--out", "fromzip",
            "--steps", "3", "--batch", "8", "--replay", "0"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["adapter"] == "detector:fromzip" and out["steps"] == 3
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.write(sorted(env["new_fake"].glob("*.png"))[0], "fake/a.png")
    assert main(["finetune", "detector", "--fake", str(bad), "--real", str(bad), "--out", "bad"]) == 2
    assert "no real/ folder" in capsys.readouterr().err
    with pytest.raises(BadInput):
        from brushpen.safety.lora_train import DetectorFinetuneRequest, finetune

        finetune(DetectorFinetuneRequest(fake=env["new_fake"], real=tmp_path / "missing", out="x"))
