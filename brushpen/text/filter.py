"""The text filter: a small editable blocklist of words and phrases, matched offline.

`blocklist.txt` beside this file holds one word or phrase per line (`#` starts a comment);
`BRUSHPEN_BLOCKLIST=FILE` swaps in another list. Matching is whole-word and case-insensitive, so
"class" does not hit "ass". A brief that hits the list is refused; the copy service regenerates an
output that hits it and drops it, with a note, when retries run out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from brushpen.errors import BadInput, BadParameter

DEFAULT_BLOCKLIST = Path(__file__).with_name("blocklist.txt")


@dataclass(frozen=True)
class Blocklist:
    path: Path
    terms: tuple[str, ...]
    pattern: re.Pattern | None

    def hits(self, text: str) -> list[str]:
        """The blocked terms found in `text`, lower-cased, in order of appearance, without repeats."""
        if self.pattern is None:
            return []
        return list(dict.fromkeys(" ".join(m.group(0).lower().split()) for m in self.pattern.finditer(text)))


def blocklist_path() -> Path:
    return Path(os.environ.get("BRUSHPEN_BLOCKLIST") or DEFAULT_BLOCKLIST).expanduser()


def load_blocklist(path: Path | None = None) -> Blocklist:
    """The list at `path` (default: $BRUSHPEN_BLOCKLIST or the shipped file); re-read when it changes."""
    path = Path(path) if path is not None else blocklist_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise BadInput(f"cannot read the blocklist {path}: {e.strerror}") from None
    return _parse(str(path), mtime)


@lru_cache(maxsize=8)
def _parse(path: str, mtime: int) -> Blocklist:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    terms = tuple(dict.fromkeys(t for t in (line.split("#", 1)[0].strip().lower() for line in lines) if t))
    if not terms:
        return Blocklist(Path(path), (), None)
    # Longest first so "motherfucker" wins over a shorter term inside it; spaces match any whitespace.
    alts = "|".join(r"\s+".join(map(re.escape, t.split())) for t in sorted(terms, key=len, reverse=True))
    return Blocklist(Path(path), terms, re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE))


def check_brief(brief: str, blocklist: Blocklist | None = None) -> None:
    """Refuse a brief that hits the blocklist, naming what matched and where the list lives."""
    blocklist = blocklist or load_blocklist()
    found = blocklist.hits(brief)
    if found:
        raise BadParameter(f"brief refused by the text filter: it contains {', '.join(repr(w) for w in found)} "
                           f"(blocklist: {blocklist.path})")
