"""Image-folder loading (labels, corrupt files, resizing) and emoji code-point matching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brushpen.errors import BadInput
from brushpen.gan.data import _codepoints, composite_on_white, emoji_categories, load_image_folder, noto_folder_name
from conftest import CLASS_NAMES, write_shape_folder


def solid(colour: tuple[int, int, int], size: int = 16, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (size, size), colour)


def test_reads_labels_from_dataset_json(tmp_path: Path) -> None:
    spec = write_shape_folder(tmp_path / "d", n=12)
    data = load_image_folder(tmp_path / "d", 16)
    assert len(data) == 12 and data.skipped == 0
    assert data.images.shape == (12, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.class_names == CLASS_NAMES
    expected = dict((name, idx) for name, idx in spec["labels"])
    assert data.labels.tolist() == [expected[f] for f in data.files]
    # Pixels are the ones on disk, in NCHW order.
    first = np.asarray(Image.open(tmp_path / "d" / data.files[0]).convert("RGB"))
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), first)


def test_skips_corrupt_and_non_image_files_with_a_count(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_shape_folder(folder, n=6)
    (folder / "x.png").write_bytes(b"this is not a png at all")
    (folder / "truncated.png").write_bytes((folder / "img000.png").read_bytes()[:40])
    (folder / "notes.txt").write_text("hello")
    spec = json.loads((folder / "dataset.json").read_text())
    spec["labels"] += [["x.png", 0], ["truncated.png", 1]]
    (folder / "dataset.json").write_text(json.dumps(spec))
    data = load_image_folder(folder, 16)
    assert len(data) == 6
    assert data.skipped == 3  # two corrupt PNGs and the text file
    assert "x.png" not in data.files and "truncated.png" not in data.files


def test_unlabelled_images_are_skipped_when_labels_are_used(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_shape_folder(folder, n=6)
    solid((1, 2, 3)).save(folder / "stray.png")
    labelled = load_image_folder(folder, 16)
    assert len(labelled) == 6 and labelled.skipped == 1
    unlabelled = load_image_folder(folder, 16, use_labels=False)
    assert len(unlabelled) == 7 and unlabelled.labels is None and unlabelled.class_names == []


def test_reads_labels_from_class_subfolders(tmp_path: Path) -> None:
    colours = {"cats": (200, 0, 0), "dogs": (0, 200, 0), "owls": (0, 0, 200)}
    for cls, colour in colours.items():
        (tmp_path / cls).mkdir()
        for i in range(3):
            solid(colour).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG garbage")
    data = load_image_folder(tmp_path, 16)
    assert data.class_names == ["cats", "dogs", "owls"]
    assert len(data) == 9 and data.skipped == 1
    for img, label in zip(data.images, data.labels):
        expected = colours[data.class_names[int(label)]]
        assert tuple(img[:, 0, 0].tolist()) == expected
    assert load_image_folder(tmp_path, 16, use_labels=False).labels is None


def test_max_images_and_resizing(tmp_path: Path) -> None:
    # A 40x20 photo: centre-cropped to 20x20 (dropping the blue borders), then resized to 16.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10] = (0, 0, 255)
    arr[:, 10:30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    # RGBA with full transparency: composited onto white.
    solid((10, 20, 30, 0), 32, "RGBA").save(tmp_path / "b.png")
    for i in range(3):
        solid((9, 9, 9)).save(tmp_path / f"c{i}.png")
    data = load_image_folder(tmp_path, 16, max_images=3)
    assert data.files == ["a.png", "b.png", "c0.png"]
    assert data.images.shape == (3, 3, 16, 16)
    assert (data.images[0, 0] == 255).all() and (data.images[0, 2] == 0).all()
    assert (data.images[1] == 255).all()


def test_empty_or_missing_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no readable images"):
        load_image_folder(tmp_path, 16)
    (tmp_path / "junk.png").write_bytes(b"nope")
    with pytest.raises(BadInput, match="1 files skipped"):
        load_image_folder(tmp_path, 16)
    with pytest.raises(BadInput, match="not found"):
        load_image_folder(tmp_path / "missing", 16)


def test_composite_on_white() -> None:
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    out = np.asarray(composite_on_white(half, 4))
    assert out.shape == (4, 4, 3)
    assert np.all(np.abs(out.astype(int) - 127) <= 1)


def test_codepoints() -> None:
    assert _codepoints("1f3f4-e0067_e0062") == (0x1F3F4, 0xE0067, 0xE0062)
    assert _codepoints("39-fe0f-20e3") == (0x39, 0x20E3)
    assert _codepoints("0039-FE0F-20E3") == (0x39, 0x20E3)
    assert _codepoints("1F600") == (0x1F600,)
    assert _codepoints("1f44b_1f3fd") == (0x1F44B, 0x1F3FD)


EMOJI_JSON = [
    {"unified": "1F600", "non_qualified": None, "category": "Smileys & Emotion", "subcategory": "face-smiling"},
    {"unified": "0039-FE0F-20E3", "non_qualified": "0039-20E3", "category": "Symbols", "subcategory": "keycap"},
    {"unified": "1F3F4-E0067-E0062", "non_qualified": None, "category": "Flags", "subcategory": "subdivision-flag"},
    {"unified": "1F44B", "non_qualified": None, "category": "People & Body", "subcategory": "hand-fingers-open",
     "skin_variations": {"1F3FB": {"unified": "1F44B-1F3FB"}, "1F3FD": {"unified": "1F44B-1F3FD"}}},
    {"unified": "2764-FE0F", "non_qualified": "2764", "category": "Smileys & Emotion", "subcategory": "heart"},
]


def test_emoji_categories_match_fluent_file_names(tmp_path: Path) -> None:
    meta = tmp_path / "emoji.json"
    meta.write_text(json.dumps(EMOJI_JSON), encoding="utf-8")
    table = emoji_categories(meta)
    lookups = {
        "1f600": "Smileys & Emotion",
        "39-fe0f-20e3": "Symbols",
        "39-20e3": "Symbols",
        "1f3f4-e0067_e0062": "Flags",
        "1f44b_1f3fd": "People & Body",
        "1f44b-1f3fb": "People & Body",
        "2764-fe0f": "Smileys & Emotion",
        "2764": "Smileys & Emotion",
    }
    for stem, category in lookups.items():
        assert table.get(_codepoints(stem)) == category, stem
    assert _codepoints("1f44b_1f3ff") not in table  # a skin tone the fixture does not list
    assert _codepoints("1f3f4") not in table  # the bare black flag is a different emoji
    # the subcategory table that `brushpen data noto --subcategory face-` filters on
    sub = emoji_categories(meta, "subcategory")
    assert sub[_codepoints("1f600")] == "face-smiling" and sub[_codepoints("2764")] == "heart"
    assert sub[_codepoints("1f44b_1f3fd")] == "hand-fingers-open"
    assert noto_folder_name("face-") == "noto-face64" and noto_folder_name(None, 32) == "noto32"


def test_dataset_json_without_class_names(tmp_path: Path) -> None:
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        solid(colour).save(tmp_path / f"{i}.png")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["0.png", 0], ["1.png", 3], ["2.png", 1]]}))
    data = load_image_folder(tmp_path, 16)
    assert data.class_names == ["0", "1", "2", "3"]
    assert data.labels.tolist() == [0, 3, 1]


def test_session_fixture_folder_is_intact(shapes_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(shapes_dir, copy)
    data = load_image_folder(copy, 16)
    assert len(data) == 64 and sorted(set(data.labels.tolist())) == [0, 1, 2]
