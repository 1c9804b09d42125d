"""Back on the CPU after `fakes.sh`: the returned generators into a models folder of their own, and
the `build-fakes` command that samples them at the budgets they reached.

    .venv/bin/python scripts/gpu/collect_fakes.py FILES_AT [--to $BRUSHPEN_HOME/fakes-models-gpu]

The other generators (the autoencoders, the VAE, the SR networks) are small: the build trains them
on the CPU in the same folder. Pass the printed budgets exactly: a budget above what a returned
generator reached would make the build train it further on the CPU, and diffusion/ and dcgan/ come
back without their optimiser state.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from brushpen.config import get_settings

NAMES = ("stylegan-photos", "diffusion", "dcgan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files_at", type=Path, help="the folder the device tool's files lie in")
    ap.add_argument("--to", type=Path, default=get_settings().home / "fakes-models-gpu")
    args = ap.parse_args()
    for name in NAMES:
        if (args.files_at / name).is_dir():
            shutil.copytree(args.files_at / name, args.to / name, dirs_exist_ok=True)
    kimg = json.loads((args.to / "stylegan-photos" / "metrics.json").read_text())["kimg"]
    steps = {k: json.loads((args.to / k / "train.json").read_text())["step"] for k in ("diffusion", "dcgan")}
    for k in ("diffusion", "dcgan"):   # the budget reached is the budget: nothing left to train
        record = json.loads((args.to / k / "train.json").read_text())
        record["steps"] = record["step"]
        (args.to / k / "train.json").write_text(json.dumps(record, indent=1))
    print(f"stylegan {kimg:.1f} kimg, diffusion {steps['diffusion']} steps, dcgan {steps['dcgan']} steps")
    print(f"next: brushpen detect build-fakes --models {args.to} --out {get_settings().data_dir / 'fakes-gpu'} "
          f"--stylegan-kimg {math.floor(kimg)} --diffusion-steps {steps['diffusion']} --diffusion-resolution 64 "
          f"--dcgan-steps {steps['dcgan']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
