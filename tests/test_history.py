"""The studio's history store (`brushpen/generators/history.py`): images, walks and copy saved with
their settings, listed newest first, read back from disk, and an index that survives a torn line
and concurrent writers."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen.gan.pipeline import StyleGANPipeline
from brushpen.generators.copy import CopyResult, CopyVariant
from brushpen.generators.history import (copy_credentials_path, history_dir, list_history, record_copy, record_images,
                                         record_walk)
from brushpen.generators.images import (ImageRequest, WalkRequest, generate_images, read_png_settings,
                                        seed_walk)
from brushpen.safety import credentials
from conftest import tiny_generator


@pytest.fixture
def shapes(brushpen_home: Path, weights_store: Path) -> str:
    StyleGANPipeline(tiny_generator()).save_pretrained(weights_store / "gan" / "shapes")
    return "shapes"


def copy_result(brief: str, seed: int) -> CopyResult:
    return CopyResult([CopyVariant(f"{brief} one", seed), CopyVariant(f"{brief} two", seed + 1)],
                      {"brief": brief, "kind": "headline", "seed": seed})


def test_images_walks_and_copy_are_kept_with_their_settings(shapes: str, brushpen_home: Path) -> None:
    images = generate_images(ImageRequest(model=shapes, n=2, seed=11, prompt="flag", truncation_psi=0.7))
    items = record_images(images)
    walk_req = WalkRequest(model=shapes, seed_a=1, seed_b=2, frames=3, format="gif")
    walk = record_walk(walk_req, seed_walk(walk_req))
    text = record_copy(copy_result("Steel bottle", 7))

    # On disk under $BRUSHPEN_HOME/history: the PNG exactly as emitted, the animation, one index line each.
    assert history_dir() == brushpen_home / "history"
    for it, im in zip(items, images):   # the pixels and chunks as emitted, with a manifest that validates
        saved = Path(it.path).read_bytes()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(saved)).convert("RGB")), np.asarray(im.image))
        assert read_png_settings(saved) == im.settings and credentials.read(saved)["state"] == "valid"
    assert credentials.read(Path(walk.path).read_bytes())["state"] == "valid"
    record = json.loads(copy_credentials_path(text.id).read_text())
    assert credentials.verify_copy(record, text.texts) == "valid"
    assert credentials.verify_copy(record, [text.texts[0], text.texts[1] + "!"]) == "invalid"
    assert Path(items[0].path).parent == brushpen_home / "history" / "images"
    assert read_png_settings(Path(items[1].path))["seed"] == 12
    assert read_png_settings(Path(items[1].path))["label"] == "Flags"
    with Image.open(walk.path) as im:
        assert im.format == "GIF" and im.n_frames == 4    # 3 frames there and 1 back
    lines = (brushpen_home / "history" / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["image", "image", "walk", "copy"]
    assert not list((brushpen_home / "history").rglob("*.tmp"))   # atomic writes leave no temp files

    # Listed back newest first, filtered by kind, with every setting.
    listed = list_history()
    assert [it.id for it in listed] == [text.id, walk.id, items[1].id, items[0].id]
    assert [it.settings["seed"] for it in list_history(kind="image")] == [12, 11]
    assert list_history(kind="image")[0].settings["truncation_psi"] == 0.7
    assert list_history(kind="walk")[0].settings == {**walk_req.__dict__}
    assert list_history(kind="copy")[0].texts == ["Steel bottle one", "Steel bottle two"]
    assert len(list_history(limit=2)) == 2


def test_a_torn_line_and_deleted_files_are_skipped(brushpen_home: Path) -> None:
    first = record_copy(copy_result("first", 1))
    index = brushpen_home / "history" / "index.jsonl"
    with open(index, "a") as f:
        f.write('{"id": "torn", "kind": "co')      # a kill mid-append leaves this
    second = record_copy(copy_result("second", 2))
    assert [it.id for it in list_history()] == [second.id, first.id]   # the append after it is whole

    req = WalkRequest(model="shapes", seed_a=0, seed_b=1, format="webp")
    gone = record_walk(req, b"RIFF....WEBP")
    os.unlink(gone.path)
    assert gone.id not in [it.id for it in list_history()]


def _append_many(home: str, tag: int) -> None:
    os.environ["BRUSHPEN_HOME"] = home
    for i in range(40):
        # Long lines (~20 KB) would split into several writes through a buffered file.
        record_copy(CopyResult([CopyVariant("x" * 20_000, i)], {"brief": f"p{tag}-{i}", "seed": i}))


def test_concurrent_writers_never_interleave_lines(brushpen_home: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(brushpen_home), tag)) for tag in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = (brushpen_home / "history" / "index.jsonl").read_text().splitlines()
    assert len(lines) == 120 and all(json.loads(line)["texts"] == ["x" * 20_000] for line in lines)
    assert {it.settings["brief"] for it in list_history(limit=1000)} == {f"p{t}-{i}" for t in range(3) for i in range(40)}
