"""Fill `.gpu/` (ignored by git) with what one GPU run of emoji64 needs, and check that it travels.

    .venv/bin/python scripts/gpu/prepare_emoji64.py [--from CHECKPOINT_DIR]

It writes:
- `.gpu/emoji64/`: the training set (the PNGs and dataset.json of `brushpen data emoji`, 15 MB);
  the GPU machine cannot reach npm.
- `.gpu/start/`: the checkpoint to start from: G, G_ema and D in fp32, Adam's second moments in bf16
  (beta1 = 0, so the first moment is not needed) and state.json. No random state: the GPU's
  generator is another kind, and the run reseeds it (and says so).
- `.gpu/wheels/`: what the GPU machine's python lacks (diffusers and importlib_metadata), from PyPI.
Then it prints the bytes a device `run` would send with `weights/` left at home (travel.py) and
exits 1 if that is over travel.LIMIT (60 MB). The start checkpoint is, by default, the newest of the CPU
background run's (`$BRUSHPEN_HOME/runs/emoji64/checkpoint`) and the store's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from travel import LIMIT, REPO, travel_bytes  # noqa: E402

from brushpen.config import get_settings  # noqa: E402

GPU = REPO / ".gpu"
WHEELS = ["diffusers==0.42.1", "importlib_metadata==8.7.0"]  # the rest of diffusers' needs are there


def newest_checkpoint() -> Path:
    candidates = [get_settings().home / "runs" / "emoji64" / "checkpoint",
                  REPO / "weights" / "gan" / "emoji64" / "checkpoint"]
    found = [c for c in candidates if (c / "state.json").exists()]
    if not found:
        raise SystemExit("no emoji64 checkpoint found: pass --from")
    return max(found, key=lambda c: json.loads((c / "state.json").read_text())["scalars"]["nimg"])


def copy_start(src: Path, dest: Path) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("G", "G_ema", "D"):
        shutil.copyfile(src / f"{name}.safetensors", dest / f"{name}.safetensors")
    for name in ("opt_G", "opt_D"):
        file = src / f"{name}.safetensors"
        if file.exists():
            slots = load_file(str(file))
            save_file({k: v.bfloat16() if k.endswith("exp_avg_sq") else v for k, v in slots.items()
                       if not k.endswith(".exp_avg")}, str(dest / file.name))
    shutil.copyfile(src / "state.json", dest / "state.json")
    return json.loads((src / "state.json").read_text())["scalars"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", type=Path, default=None, help="checkpoint folder to start from")
    ap.add_argument("--data", type=Path, default=get_settings().data_dir / "emoji64",
                    help="the `brushpen data emoji` folder (built when missing)")
    args = ap.parse_args()
    if not (args.data / "dataset.json").exists():
        subprocess.run([sys.executable, "-m", "brushpen.cli.main", "data", "emoji", "--out", str(args.data)], check=True)
    shutil.rmtree(GPU, ignore_errors=True)
    data = GPU / "emoji64"
    data.mkdir(parents=True)
    for f in args.data.iterdir():
        if f.suffix in (".png", ".json"):
            shutil.copyfile(f, data / f.name)
    src = args.src or newest_checkpoint()
    scalars = copy_start(src, GPU / "start")
    (GPU / "wheels").mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(GPU / "wheels"), *WHEELS], check=True)
    size = travel_bytes([".gpu"], drop=("weights/",))
    if size > LIMIT:  # Adam's moments are worth carrying, not worth a refused call: start them fresh
        for f in (GPU / "start").glob("opt_*.safetensors"):
            f.unlink()
        print("over the limit with Adam's moments: the GPU run starts them fresh")
        size = travel_bytes([".gpu"], drop=("weights/",))
    print(f"start: {src} at kimg {scalars['nimg'] / 1000:.3f}, step {scalars['step']}, "
          f"augment p {scalars['ada']['p']:.3f}")
    print(f"travels with weights/ left at home: {size:,} bytes ({size / 1e6:.1f} MB of {LIMIT / 1e6:.0f})")
    return 0 if size <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
