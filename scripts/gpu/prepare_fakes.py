"""Fill `.gpu/` (ignored by git) with what one GPU run of the checker's fake generators needs
(`fakes.sh`), and check that it travels.

    .venv/bin/python scripts/gpu/prepare_fakes.py [--photos DIR]

It writes `.gpu/photos/train/` (the real TRAIN patches of `brushpen data photos`, about 33 MB; the
GPU machine cannot reach Debian) and `.gpu/wheels/` (what the GPU machine's python lacks, from
PyPI, as `prepare_emoji64.py` does). Then it prints the bytes a device `run` would send with
`weights/` left at home and exits 1 if that is over travel.LIMIT.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_emoji64 import WHEELS  # noqa: E402
from travel import LIMIT, REPO, travel_bytes  # noqa: E402

from brushpen.config import get_settings  # noqa: E402

GPU = REPO / ".gpu"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=get_settings().data_dir / "photos",
                    help="the `brushpen data photos` folder (built when missing)")
    args = ap.parse_args()
    if not (args.photos / "train").is_dir():
        subprocess.run([sys.executable, "-m", "brushpen.cli.main", "data", "photos", "--out", str(args.photos)],
                       check=True)
    shutil.rmtree(GPU, ignore_errors=True)
    shutil.copytree(args.photos / "train", GPU / "photos" / "train")
    (GPU / "wheels").mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(GPU / "wheels"), *WHEELS], check=True)
    size = travel_bytes([".gpu"], drop=("weights/",))
    print(f"travels with weights/ left at home: {size:,} bytes ({size / 1e6:.1f} MB of {LIMIT / 1e6:.0f})")
    return 0 if size <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
