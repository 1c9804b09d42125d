"""The held-out protocol (LOFO over fake families, LOSO over photo sources) and the post-processing
augmentation chain.

The fixture is a `build-fakes`-style manifest: 1/f textures as "real" patches from two photo
sources (named PACKAGE__PHOTO-NNN.png as `data photos` names them), and three fake families: two
drawn "from noise" (no source) and one made from real host patches (it carries the host's source).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen.safety.detector import DetectorConfig, load_detector
from brushpen.safety.detector_data import POST_OPS, augment, gather, photo_source, post_process, read_set
from brushpen.safety.detector_heldout import evaluate_held_out, held_out_markdown, held_out_names, headline, \
    summarise, scoring_set, train_held_out
from brushpen.safety.detector_train import TrainConfig, train_detector
from tests.test_detector import fake_of, texture

TINY = DetectorConfig(widths=(16, 24, 32), strides=(1, 2, 2))
SOURCES = ("mate-backgrounds", "scikit-image", "scikit-learn")   # the last two are one source: pypi-samples


def make_manifest(root: Path, per_split: dict[str, int]) -> Path:
    rng = np.random.default_rng(1)
    rows = []

    def put(rel: str, im: Image.Image, family: str, split: str, source: str | None) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(root / rel)
        rows.append({"path": rel, "family": family, "label": int(family != "real"), "generator": family,
                     "split": split, "encoding": "png", "quality": None, "source": source, "mask": None,
                     "mask_area": None})

    for split, n in per_split.items():
        for i in range(n):
            src = f"{split}/{SOURCES[i % 3]}__photo{i % 5}.jpg-{i:03d}.png"
            host = texture(rng)
            put(f"real/{src}", host, "real", split, src)
            put(f"bilinear/{split}/b{i:04d}.png", fake_of(texture(rng), 0), "bilinear", split, None)
            put(f"nearest/{split}/n{i:04d}.png", fake_of(texture(rng), 1), "nearest", split, None)
            put(f"rehost/{split}/h{i:04d}.png", fake_of(host, i % 2), "rehost", split, src)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("heldout") / "fakes", {"train": 96, "val": 36, "test": 36})


def test_photo_sources_group_packages_and_leaving_one_out_drops_its_reals_and_their_fakes(data: Path) -> None:
    reals = read_set(data, 0)
    assert {photo_source(s) for s in reals} == {"mate-backgrounds", "pypi-samples"}
    assert held_out_names(gather([], [data]), "source") == ["mate-backgrounds", "pypi-samples"]
    assert held_out_names(gather([], [data]), "family") == ["bilinear", "nearest", "rehost"]
    kept = gather([], [data], exclude_sources=("mate-backgrounds",))
    assert not any(photo_source(s) == "mate-backgrounds" for s in kept)
    by_family = {f: sum(s.family == f for s in kept) for f in ("real", "bilinear", "nearest", "rehost")}
    everything = gather([], [data])
    assert by_family["bilinear"] == sum(s.family == "bilinear" for s in everything)   # no source: all kept
    assert by_family["rehost"] == sum(s.family == "rehost" and photo_source(s) != "mate-backgrounds"
                                      for s in everything) < sum(s.family == "rehost" for s in everything)

    pair = scoring_set(everything, "source", "mate-backgrounds")
    held_reals = [s for s in pair if s.label == 0]
    assert {s.split for s in held_reals} == {"train", "val", "test"}          # never seen: every split counts
    assert all(photo_source(s) == "mate-backgrounds" for s in held_reals)
    assert all(s.split == "test" and photo_source(s) != "mate-backgrounds" for s in pair if s.label == 1)
    fam_pair = scoring_set(everything, "family", "nearest")
    assert {s.family for s in fam_pair} == {"real", "nearest"} and {s.split for s in fam_pair} == {"test"}


def test_held_out_models_train_without_what_they_are_scored_on_and_the_summary_agrees(data: Path,
                                                                                     tmp_path: Path) -> None:
    base = TrainConfig(out=tmp_path / "unused", fake=[data], steps=40, batch=16, snap=40, model=TINY)
    train_held_out(tmp_path / "held", base, "family", log=lambda m: None)
    train_held_out(tmp_path / "held", base, "source", names=["mate-backgrounds"], log=lambda m: None)
    trained = json.loads((tmp_path / "held" / "family-nearest" / "train.json").read_text())
    assert trained["families"] == ["bilinear", "rehost"]
    assert json.loads((tmp_path / "held" / "source-mate-backgrounds" / "train.json").read_text())["config"][
        "exclude_sources"] == ["mate-backgrounds"]

    rows = evaluate_held_out(tmp_path / "held", [], [data])
    assert sorted((r["protocol"], r["held_out"]) for r in rows) == [
        ("LOFO", "bilinear"), ("LOFO", "nearest"), ("LOFO", "rehost"), ("LOSO", "mate-backgrounds")]
    for r in rows:
        for setting in ("clean", "jpeg75"):
            m = r[setting]
            assert 0 <= m["auc"] <= 1 and 0 <= m["fpr_at_t_fake"] <= 1 and m["n_real"] > 0 and m["n_fake"] > 0
    loso = next(r for r in rows if r["protocol"] == "LOSO")["clean"]
    assert loso["n_real"] == sum(photo_source(s) == "mate-backgrounds" for s in read_set(data, 0))
    summary = summarise(rows)
    lofo = [r["clean"]["auc"] for r in rows if r["protocol"] == "LOFO"]
    assert summary["LOFO"]["clean"]["mean_auc"] == pytest.approx(np.mean(lofo), abs=1e-4)
    assert summary["LOFO"]["clean"]["min_auc"] == pytest.approx(min(lofo), abs=1e-4)
    assert summary["LOFO"]["clean"]["n"] == 3 and summary["LOSO"]["jpeg75"]["n"] == 1
    table = held_out_markdown(rows)
    assert "**LOFO**" in table and "**LOSO**" in table and table.count("| mean |") == 2
    assert f"{summary['LOFO']['clean']['mean_auc']:.3f}" in headline(summary)

    # A resumed call with the same budget trains nothing more.
    before = (tmp_path / "held" / "family-nearest" / "model.safetensors").read_bytes()
    train_held_out(tmp_path / "held", base, "family", names=["nearest"], log=lambda m: None)
    assert (tmp_path / "held" / "family-nearest" / "model.safetensors").read_bytes() == before


def test_eval_cli_leads_the_card_with_the_held_out_headline(data: Path, tmp_path: Path) -> None:
    model = tmp_path / "store" / "safety" / "det"
    train_detector(TrainConfig(out=model, fake=[data], steps=30, batch=16, snap=30, model=TINY, progress=False),
                   log=lambda m: None)
    held = tmp_path / "held"
    run = subprocess.run([sys.executable, "-m", "brushpen.cli.main", "detect", "eval", "--model", str(model),
                          "--fake", str(data), "--lofo-steps", "20", "--held-out-dir", str(held)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    card = (model / "card.md").read_text()
    assert card.index("## Held out") < card.index("## Training") < card.index("## In distribution")
    assert "mean held-out-family AUC **" in card
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["held_out_summary"]["LOFO"]["clean"]["n"] == 3
    # the stand-ins use the model's own recipe (its widths), not the default one
    assert load_detector(held / "family-bilinear").config.widths == TINY.widths
    assert json.loads((held / "family-bilinear" / "train.json").read_text())["steps"] == 20


def test_post_processing_chain_draws_each_op_alone_and_in_pairs_and_leaves_masks_alone() -> None:
    rng = np.random.default_rng(0)
    image = np.asarray(texture(rng))
    im = Image.fromarray(image)
    for name, op in POST_OPS.items():
        out = np.asarray(op(im, np.random.default_rng(3)))
        assert out.shape == image.shape and np.abs(out.astype(int) - image).mean() > 0.3, name
    changed = [not np.array_equal(np.asarray(post_process(im, np.random.default_rng(s))), image) for s in range(200)]
    assert 0.45 < np.mean(changed) < 0.75          # none with p 0.4 (an op can be a near no-op)
    a = np.asarray(post_process(im, np.random.default_rng(7)))
    assert np.array_equal(a, np.asarray(post_process(im, np.random.default_rng(7))))   # seeded
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 255
    for s in range(20):
        _, m = augment(image, mask, np.random.default_rng(s))
        assert set(np.unique(m)) <= set(range(256)) and m.shape == mask.shape
        _, m_basic = augment(image, mask, np.random.default_rng(s), recipe="basic")
        assert m_basic.shape == mask.shape


def test_train_cli_rejects_a_bad_recipe_and_bad_widths(data: Path, tmp_path: Path) -> None:
    from brushpen.errors import BadParameter

    with pytest.raises(BadParameter, match="recipe"):
        TrainConfig(out=tmp_path, fake=[data], augment="bogus").check()
    for widths in ("1,2,x", "8,8"):
        run = subprocess.run([sys.executable, "-m", "brushpen.cli.main", "detect", "train", "--fake", str(data),
                              "--out", str(tmp_path / "m"), "--widths", widths], capture_output=True, text=True)
        assert run.returncode != 0 and "--widths" in run.stderr and "Traceback" not in run.stderr


def test_a_model_scored_as_it_is_on_a_set_it_never_saw(data: Path, tmp_path: Path) -> None:
    model = tmp_path / "store" / "safety" / "old"
    train_detector(TrainConfig(out=model, fake=[data], families=("bilinear",), steps=20, batch=16, snap=20,
                               model=TINY, progress=False), command="brushpen detect train (the old one)",
                   log=lambda m: None)
    (model / "metrics.json").write_text(json.dumps({"eval": [], "eval_command": "brushpen detect eval (old set)"}))
    photos = tmp_path / "other-photos"          # a `data photos` folder of sources outside the set
    rng, rows = np.random.default_rng(5), []
    for i in range(12):
        rel = f"test/kphotoalbum__snap{i}.jpg-000.png"
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        texture(rng).save(photos / rel)
        rows.append({"file": rel, "split": "test", "package": "kphotoalbum"})
    (photos / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    run = subprocess.run([sys.executable, "-m", "brushpen.cli.main", "detect", "eval", "--model", str(model),
                          "--fake", str(data), "--unseen-set", "--unseen-real", str(photos)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["eval_command"] == "brushpen detect eval (old set)"      # the in-distribution rows kept
    summary = metrics["held_out_summary"]
    assert summary["unseen set"]["clean"]["n"] == 3 and summary["unseen sources"]["clean"]["n"] == 1
    unseen = next(r for r in metrics["held_out"] if r["protocol"] == "unseen sources")["clean"]
    assert unseen["n_real"] == 12 and unseen["n_fake"] == sum(s.split == "test" for s in read_set(data, 1))
    assert len(list((photos / ".encoded").rglob("*.png"))) == 12       # re-encoded once, beside the folder
    card = (model / "card.md").read_text()
    assert "**unseen set** (the model as it is)" in card and "--unseen-set" in card
    assert f"mean held-out-family AUC **{summary['unseen set']['clean']['mean_auc']:.3f}**" in card
    # the Data section describes the set it was trained on, kept in train.json, not the set of today
    assert json.loads((model / "train.json").read_text())["data_md"] in card
