"""What a device `run` would send, in bytes, and the switch that keeps `weights/` at home for it.

The device tool copies the working tree (tracked files, untracked files that git does not ignore)
plus the ignored paths named in `carry`, "64 MiB" in all, by its README. `weights/` alone is larger, and a GPU run
needs none of it (its start checkpoint travels in `.gpu/`), so for the call the index forgets
`weights/` and `.git/info/exclude` ignores it; `--restore` undoes both. The files on disk are never
touched.

    python scripts/gpu/travel.py                    # the size now, with .gpu carried
    python scripts/gpu/travel.py --drop-weights     # untrack weights/ for the call, print the size
    python scripts/gpu/travel.py --restore          # after the call: weights/ tracked again
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The tool refused a 64,814,764-byte tree (61.8 MiB, 64.8 MB) on 2026-12-04 and took a 54,164,618-byte
# one: its 64 counts bytes in some other way than ours, so we hold the tree to 60 MB.
LIMIT = 60 * 10**6
# What prepare_emoji64.py adds beside the start checkpoint: the emoji set as PNGs (14.4 MiB) and
# the wheels (6.1 MiB), with room to spare. Its test (tests/test_gpu_travel.py) holds the tree to it.
DATA_AND_WHEELS = 22 * 2**20
# git's ignore files take no comment after a pattern: the note has a line of its own.
EXCLUDE_NOTE = "# scripts/gpu/travel.py --drop-weights (undo: --restore)"
EXCLUDE_LINE = "/weights/"
OURS = {EXCLUDE_NOTE, EXCLUDE_LINE, EXCLUDE_LINE + "  " + EXCLUDE_NOTE}  # the last: an older form that matched nothing


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def travel_files(carry: list[str], drop: tuple[str, ...] = ()) -> list[Path]:
    """The files a run would send: tracked + untracked-not-ignored, minus `drop` prefixes, plus `carry`."""
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    files = [REPO / n for n in names if n and not n.startswith(drop)]
    for c in carry:
        root = REPO / c
        files += [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else [root] if root.exists() else []
    return sorted({f for f in files if f.is_file()})


def travel_bytes(carry: list[str], drop: tuple[str, ...] = ()) -> int:
    return sum(f.stat().st_size for f in travel_files(carry, drop))


def weights_dropped() -> bool:
    exclude = REPO / ".git" / "info" / "exclude"
    return exclude.exists() and EXCLUDE_LINE in exclude.read_text().splitlines()


def drop_weights() -> None:
    """Untrack weights/ in the index only (no file on disk changes) and ignore it, for one call."""
    if weights_dropped():
        return
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"\n{EXCLUDE_NOTE}\n{EXCLUDE_LINE}\n")
    _git("rm", "-r", "-q", "--cached", "weights")


def restore_weights() -> None:
    exclude = REPO / ".git" / "info" / "exclude"
    if exclude.exists():
        kept = [line for line in exclude.read_text().splitlines() if line not in OURS]
        exclude.write_text("\n".join(kept).rstrip("\n") + "\n")
    _git("reset", "-q", "--", "weights")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--carry", default=".gpu", help="comma-separated ignored paths the call carries")
    ap.add_argument("--drop-weights", action="store_true")
    ap.add_argument("--restore", action="store_true")
    args = ap.parse_args()
    if args.restore:
        restore_weights()
        print("weights/ is tracked again")
    elif args.drop_weights:
        drop_weights()
    carry = [c for c in args.carry.split(",") if c]
    size = travel_bytes(carry)
    dropped = weights_dropped()
    print(f"travels: {size:,} bytes ({size / 1e6:.1f} MB of {LIMIT / 1e6:.0f}); "
          f"carry {carry}; weights/ {'left at home' if dropped else 'included'}")
    if size > LIMIT:
        print("over the limit: the call would be refused", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
