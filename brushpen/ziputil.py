"""Safe reading of uploaded zip files: the one place where zip entries are judged.

Zips come from users: images for the checker, training data for a GAN or a detector, fine-tuning
uploads. Every reader goes through here, so all of them refuse the same things: an entry whose name
is absolute or holds `..` (`unsafe_name`), more entries than allowed, a compression ratio over the
cap (a zip bomb), and more uncompressed bytes than allowed, counted on the bytes read and never
taken from the header on trust. It sits at the bottom layer because the checker (`generators`),
the GAN and detector trainers (`gan`, `safety`) and the fine-tuning upload check all use it.

There are three readers, one for each way of treating a bad entry:
- `iter_zip`: report the bad entry and go on. The checker's scan uses it, and so does a detector
  training set, which skips what is unsafe.
- `unpack_zip`: refuse the whole zip. GAN training data is all or nothing; the zip is unpacked to
  a folder.
- `check_upload`: refuse an upload at once by the sizes it declares, before anything is read.
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from brushpen.errors import BadInput
from brushpen.store import publish_dir, staging_dir

# What reading a damaged or unsupported entry raises (bad CRC, encrypted, truncated, unknown method).
READ_ERRORS = (zipfile.BadZipFile, RuntimeError, OSError, NotImplementedError, EOFError)


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 10_000
    max_total: int = 1 << 30           # uncompressed bytes read from one zip, in all
    max_ratio: float = 200.0           # PNG/JPEG barely compress; a 1000:1 entry is a bomb
    max_entry: int = 64 << 20          # bytes of one entry held in memory (iter_zip); unpack_zip
                                       # streams entries to disk and caps only the total


# GAN training data is unpacked to disk, so it may be larger than a scan.
TRAINING_LIMITS = ZipLimits(max_entries=20_000, max_total=2 << 30)


def unsafe_name(name: str) -> str | None:
    """Why an entry name may not be used as a path (absolute, a drive, or '..'), or None if it may."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path in zip refused"
    if ".." in parts:
        return "zip entry with '..' in its path refused"
    return None


def ratio(info: zipfile.ZipInfo) -> float:
    """The entry's declared uncompressed:compressed ratio."""
    return info.file_size / max(info.compress_size, 1)


def iter_zip(path: Path, limits: ZipLimits = ZipLimits()) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(`path!entry`, bytes or None, error or None) per file entry; a bad entry is reported and skipped.

    An unreadable zip gives one item named `path` with the error. The caps are counted on the bytes read.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        yield str(path), None, f"not a readable zip file: {e}"
        return
    total = 0
    with zf:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        for n, info in enumerate(entries):
            name = f"{path}!{info.filename}"
            if n >= limits.max_entries:
                yield f"{path}!...", None, (f"{len(entries) - n} more entries skipped: a zip may hold at most "
                                            f"{limits.max_entries:,}")
                return
            if (why := unsafe_name(info.filename)) is not None:
                yield name, None, why
                continue
            if ratio(info) > limits.max_ratio:
                yield name, None, (f"compression ratio {ratio(info):,.0f}:1 "
                                   f"over {limits.max_ratio:,.0f}:1 (a zip bomb?)")
                continue
            budget = min(limits.max_entry, limits.max_total - total)
            if budget <= 0:
                yield name, None, f"the zip's total uncompressed size passed {limits.max_total:,} bytes"
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(budget + 1)
            except READ_ERRORS as e:
                yield name, None, f"unreadable zip entry: {e}"
                continue
            total += len(data)
            if len(data) > budget:
                yield name, None, (f"entry is larger than {budget:,} bytes (file or total-zip limit)")
                continue
            yield name, data, None


def unpack_zip(path: Path, dest: Path, limits: ZipLimits = TRAINING_LIMITS) -> Path:
    """Extract an uploaded training zip into `dest`, refusing the whole upload on any unsafe entry.

    Unlike `iter_zip` (which reports a bad entry and goes on), training data is all or nothing: an
    entry with an absolute path or `..`, too many entries, or a zip bomb raises `BadInput`. Sizes
    are counted on the bytes read, never taken from the header on trust. The folder is written to a
    staging folder and published whole, so a kill leaves no half-folder.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise BadInput(f"{Path(path).name} is not a readable zip file: {e}") from e
    stage = staging_dir(Path(dest))
    try:
        _extract(zf, stage, limits)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return publish_dir(stage, Path(dest))


def _extract(zf: zipfile.ZipFile, stage: Path, limits: ZipLimits) -> None:
    total = 0
    with zf:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        if len(entries) > limits.max_entries:
            raise BadInput(f"the zip holds {len(entries):,} files; at most {limits.max_entries:,} are allowed")
        for info in entries:
            if unsafe_name(info.filename) is not None:
                raise BadInput(f"unsafe path in zip: '{info.filename}' (absolute or with '..')")
            if ratio(info) > limits.max_ratio:
                raise BadInput(f"'{info.filename}' compresses {ratio(info):,.0f}:1, "
                               f"over {limits.max_ratio:,.0f}:1: refusing a likely zip bomb")
            target = stage / info.filename.replace("\\", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > limits.max_total:
                            raise BadInput(f"the zip unpacks to over {limits.max_total:,} bytes")
                        out.write(chunk)
            except READ_ERRORS as e:
                raise BadInput(f"unreadable zip entry '{info.filename}': {e}") from e


def check_upload(filename: str, data: bytes, limits: ZipLimits = ZipLimits()) -> None:
    """Refuse an uploaded zip at once: unreadable, empty, an unsafe name, or declared sizes over the caps.

    The sizes a zip declares are checked again while it is read (`iter_zip`, `unpack_zip`); here
    they refuse an obvious bomb at upload, with a message, rather than entry by entry later.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as e:
        raise BadInput(f"'{filename}' is not a readable zip file: {e}") from None
    for info in infos:
        if (why := unsafe_name(info.filename)) is not None:
            raise BadInput(f"'{filename}': {info.filename}: {why}")
    files = [i for i in infos if not i.is_dir()]
    if not files:
        raise BadInput(f"'{filename}' is empty")
    if len(files) > limits.max_entries:
        raise BadInput(f"'{filename}' holds {len(files):,} files; at most {limits.max_entries:,}")
    if (declared := sum(i.file_size for i in files)) > limits.max_total:
        raise BadInput(f"'{filename}' would unpack to {declared:,} bytes; at most {limits.max_total:,}")
    for info in files:
        if ratio(info) > limits.max_ratio:
            raise BadInput(f"'{filename}': {info.filename} is compressed {ratio(info):,.0f}:1, over "
                           f"{limits.max_ratio:,.0f}:1 (a zip bomb?)")
