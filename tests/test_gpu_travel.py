"""The prepared GPU run fits what the device tool carries (held to 60 MB) with weights/ left at home."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts" / "gpu"))
from travel import DATA_AND_WHEELS, EXCLUDE_LINE, EXCLUDE_NOTE, LIMIT, travel_bytes, travel_files  # noqa: E402


def test_tree_without_weights_plus_the_start_checkpoint_fits_the_limit() -> None:
    tree = travel_bytes([], drop=("weights/",))
    start = REPO / "weights" / "gan" / "emoji64" / "checkpoint"
    weights = sum((start / f"{n}.safetensors").stat().st_size for n in ("G", "G_ema", "D"))
    assert weights > 25 * 2**20  # the real fp32 G, G_ema and D are what travel
    total = tree + weights + DATA_AND_WHEELS
    print(f"tree {tree / 1e6:.1f} MB + start {weights / 1e6:.1f} + data and wheels "
          f"{DATA_AND_WHEELS / 1e6:.1f} = {total / 1e6:.1f} MB of {LIMIT / 1e6:.0f}")
    assert total <= LIMIT
    assert tree < 4 * 2**20, "the code tree alone should stay small; large files belong in weights/ or .gpu/"


def test_the_whole_store_would_not_travel() -> None:
    """Why travel.py exists: weights/ alone is over the limit, so it must stay at home."""
    assert travel_bytes([]) > LIMIT
    files = travel_files([], drop=("weights/",))
    assert files and not any("weights" in f.relative_to(REPO).parts[:1] for f in files)


def test_travel_script_reports_without_touching_the_index() -> None:
    before = subprocess.run(["git", "ls-files", "weights"], cwd=REPO, capture_output=True, text=True).stdout
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu" / "travel.py"), "--carry", ""],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "travels:" in done.stdout and "MB of 60" in done.stdout
    after = subprocess.run(["git", "ls-files", "weights"], cwd=REPO, capture_output=True, text=True).stdout
    assert before == after and before


def test_the_exclude_lines_really_ignore_weights(tmp_path) -> None:
    # git takes no comment after a pattern: "/weights/  # note" once ignored nothing, and the first
    # GPU call of 2026-12-04 was refused as too large. The note now has a line of its own.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "G.safetensors").write_bytes(b"0")
    (tmp_path / ".git" / "info").mkdir(exist_ok=True)
    with (tmp_path / ".git" / "info" / "exclude").open("a") as f:
        f.write(f"\n{EXCLUDE_NOTE}\n{EXCLUDE_LINE}\n")
    ignored = subprocess.run(["git", "check-ignore", "-q", "weights/G.safetensors"], cwd=tmp_path)
    assert ignored.returncode == 0
