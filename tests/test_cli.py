"""The `brushpen` command line: models list, image generate with PNG settings, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen.cli.main import main
from brushpen.gan.pipeline import StyleGANPipeline
from brushpen.generators.images import read_png_settings
from conftest import PYTHON, REPO, subprocess_env, tiny_generator


@pytest.fixture
def tiny_store(weights_store: Path, brushpen_home: Path) -> Path:
    """A store holding gan/tiny (conditional, 16x16) with a metrics.json and a card."""
    folder = weights_store / "gan" / "tiny"
    StyleGANPipeline(tiny_generator(3)).save_pretrained(folder)
    (folder / "metrics.json").write_text(json.dumps({"fid": 12.3456, "kimg": 4.0}))
    (folder / "card.md").write_text("# tiny\n\nA test model.\n")
    return weights_store


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "brushpen.cli.main", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_models_list_shows_family_size_and_key_metric(tiny_store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["family", "name", "size", "key", "metric"]
    [row] = [line for line in lines if "tiny" in line]
    assert row.split()[:2] == ["gan", "tiny"]
    assert row.endswith("fid=12.35")
    assert " kB" in row  # a few tens of kB of weights

    assert main(["models", "list", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["family"] == "gan" and entry["name"] == "tiny"
    assert entry["metrics"] == {"fid": 12.3456, "kimg": 4.0}
    assert entry["size_bytes"] == sum(p.stat().st_size for p in (tiny_store / "gan" / "tiny").iterdir())


def test_models_show_prints_card_and_metrics(tiny_store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "show", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "A test model." in out and '"fid": 12.3456' in out


def test_models_show_an_adapters_only_base(tiny_store: Path, capsys: pytest.CaptureFixture) -> None:
    """A base built outside the store (as SmolLM2) is listed by its card and adapters; show finds it."""
    base = tiny_store / "text" / "outside-base"
    (base / "adapters" / "voice").mkdir(parents=True)
    (base / "card.md").write_text("Built from PyPI at first use.", encoding="utf-8")
    assert main(["models", "show", "outside-base"]) == 0
    assert "Built from PyPI at first use." in capsys.readouterr().out


def test_models_list_empty_store(weights_store: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no models in the store"


def test_image_generate_writes_pngs_with_their_settings(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("image", "generate", "--model", "tiny", "--n", "3", "--seed", "40",
                   "--truncation", "0.7", "--label", "flag", "--out", str(out), "--grid", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    written = [Path(line) for line in proc.stdout.split()]
    pngs = sorted(out.glob("tiny-seed*.png"))
    assert len(pngs) == 3 and set(pngs) <= set(written)
    settings = [read_png_settings(p) for p in pngs]
    assert [s["seed"] for s in settings] == [40, 41, 42]
    for s in settings:
        assert s["model"] == "tiny" and s["n"] == 1 and s["label"] == "Flags"
        assert s["truncation_psi"] == 0.7 and s["noise_mode"] == "none"
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 * 16, 2 * 16)
    # Different seeds, different images.
    assert not np.array_equal(pixels(pngs[0]), pixels(pngs[1]))

    # Re-making one image from its stored settings (in-process this time) gives the same pixels.
    again = tmp_path / "again"
    s = settings[1]
    assert main(["image", "generate", "--model", s["model"], "--n", "1", "--seed", str(s["seed"]),
                 "--truncation", str(s["truncation_psi"]), "--label", s["label"],
                 "--out", str(again), "--threads", "1"]) == 0
    [remade] = list(again.glob("*.png"))
    assert remade.name == pngs[1].name
    assert np.array_equal(pixels(remade), pixels(pngs[1]))
    assert read_png_settings(remade) == s


def test_image_walk_takes_walk_request_defaults(tiny_store: Path, tmp_path: Path) -> None:
    from brushpen.generators.images import WalkRequest

    assert main(["image", "walk", "--model", "tiny", "--out", str(tmp_path / "w.gif"), "--threads", "1"]) == 0
    with Image.open(tmp_path / "w.gif") as im:
        # there and back: frames + (frames - 2)
        assert im.n_frames == 2 * WalkRequest().frames - 2
        assert abs(im.info["duration"] - 1000 / WalkRequest().fps) <= 10   # GIF keeps centiseconds
    assert main(["image", "walk", "--model", "tiny", "--frames", "3", "--truncation", "0.5",
                 "--out", str(tmp_path / "w.webp"), "--threads", "1"]) == 0
    with Image.open(tmp_path / "w.webp") as im:
        assert im.format == "WEBP" and im.n_frames == 4


def test_unknown_model_is_a_one_line_error(tiny_store: Path, tmp_path: Path) -> None:
    proc = run_cli("image", "generate", "--model", "nosuchmodel", "--n", "2", "--seed", "1",
                   "--out", str(tmp_path / "o"), "--threads", "1")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: unknown model 'nosuchmodel'")
    assert "gan/tiny" in lines[0]  # the message names the models that do exist
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "error: n must lie in 1..256, got 0"),
    (["--n", "1", "--label", "dragon"], "error: unknown class 'dragon'. Classes: Circles, Squares, Flags"),
    (["--n", "1", "--mix-seed", "3"], "error: style mixing needs both mix_seed and mix_cutoff"),
    (["--n", "1", "--mix-seed", "3", "--mix-cutoff", "99"], "error: style-mix crossover must lie in 1..5"),
    (["--n", "1", "--truncation", "5"], "error: truncation_psi must lie in [0, 2]"),
])
def test_bad_parameters_are_one_line_errors(tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            args: list[str], message: str) -> None:
    code = main(["image", "generate", "--model", "tiny", "--seed", "0", "--out", str(tmp_path / "o"),
                 "--threads", "1", *args])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip() == message
    assert "Traceback" not in captured.err
    assert not list((tmp_path).glob("o/*.png"))


def test_training_on_a_missing_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["gan", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out"),
                 "--resolution", "16", "--channels", "32,16,8", "--threads", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: dataset folder not found: {tmp_path / 'missing'}"
    code = main(["gan", "train", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--resolution", "12"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: resolution must be a power of two >= 8"
