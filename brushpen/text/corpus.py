"""Text corpora for pretraining: reading documents from disk, a deterministic held-out split, and
the offline Debian `fortunes` corpus.

A corpus is a `.txt` file or a folder of them. A file splits into documents on lines holding only
`%` (the fortune format); failing that, on blank lines; failing that, one document per line. A
folder holding `train.txt` and `val.txt` carries its own split; otherwise documents are held out
by a seeded shuffle, so the same seed always gives the same validation set. `build_fortunes`
fetches Debian `fortunes-min` and `fortunes` with `apt-get download`, unpacks them with
`dpkg-deb -x` (no install, no root), keeps a whitelist of clean files and drops any entry that
still hits a small blocklist.
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from brushpen.errors import BadInput, BadParameter
from brushpen.registry import apt_download, unpack_deb
from brushpen.store import atomic_write_json, atomic_write_text

FORTUNE_PACKAGES = ("fortunes-min", "fortunes")
FORTUNE_DIR = "usr/share/games/fortunes"
# Checked by hand (Debian 1:1.99.1-7.3). Left out: art, cookie, definitions, drugs, ethnic,
# knghtbrd, law, linuxcookie, love, men-women, politics, songs-poems, zippy (crude, ethnic or
# sexual jokes, IRC logs, lyrics); ascii-art, disclaimer, pratchett, translate-me (not prose).
FORTUNE_WHITELIST = (
    "computers", "debian", "education", "food", "fortunes", "goedel", "humorists", "kids",
    "linux", "literature", "magic", "medicine", "miscellaneous", "news", "paradoxum", "people",
    "perl", "pets", "platitudes", "riddles", "science", "sports", "startrek", "tao", "wisdom", "work",
)
# A second guard inside whitelisted files: any entry with one of these words is dropped.
BLOCKLIST = re.compile(
    r"\b(fuck\w*|shit\w*|cunt\w*|nigger\w*|rape[sd]?|raping|porn\w*|penis\w*|whores?|bitch\w*|"
    r"bastards?|piss\w*|sex\w*|nude|naked|breasts?|tits|fag\w*)\b", re.IGNORECASE)
SEPARATOR = "\n%\n"
_OVERSTRIKE = re.compile(r".\x08")  # old terminals bolded with "X\bX"; keep the last character


@dataclass
class Corpus:
    train: list[str]
    val: list[str]
    source: dict = field(default_factory=dict)

    @property
    def val_chars(self) -> int:
        return sum(len(d) for d in self.val)


def split_documents(text: str) -> list[str]:
    """One file's documents: `%` lines, else blank lines, else single lines."""
    text = text.replace("\r\n", "\n")
    if re.search(r"^%$", text, re.MULTILINE):
        parts = re.split(r"^%\n?", text, flags=re.MULTILINE)
    elif re.search(r"\n[ \t]*\n", text):
        parts = re.split(r"\n[ \t]*\n", text)
    else:
        parts = text.split("\n")
    return [p.strip("\n") for p in parts if p.strip()]


def read_documents(path: Path) -> list[str]:
    """Every document of a `.txt` file or of the `.txt` files of a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise BadInput(f"{path} holds no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise BadInput(f"corpus {path} does not exist")
    docs = []
    for f in files:
        try:
            docs += split_documents(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise BadInput(f"{f} is not UTF-8 text: {e}") from e
    return docs


def holdout(docs: list[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out whole documents, chosen by a seeded shuffle; both halves keep the original order."""
    if not 0 < val_fraction < 1:
        raise BadParameter("val_fraction must be between 0 and 1")
    if len(docs) < 2:
        raise BadInput(f"a corpus needs at least 2 documents to hold some out, got {len(docs)}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(docs) * val_fraction))
    val_idx = set(order[:n_val])
    return ([d for i, d in enumerate(docs) if i not in val_idx],
            [d for i, d in enumerate(docs) if i in val_idx])


def load_corpus(path: Path, val_fraction: float = 0.1, seed: int = 0) -> Corpus:
    """Train and validation documents: the folder's own train.txt/val.txt, or a seeded holdout."""
    path = Path(path)
    if path.is_dir() and (path / "train.txt").is_file() and (path / "val.txt").is_file():
        train, val = read_documents(path / "train.txt"), read_documents(path / "val.txt")
        source = {"corpus": str(path), "split": "train.txt/val.txt"}
        if (path / "source.json").is_file():
            import json

            source.update(json.loads((path / "source.json").read_text(encoding="utf-8")))
    else:
        train, val = holdout(read_documents(path), val_fraction, seed)
        source = {"corpus": str(path), "split": f"holdout {val_fraction} of documents, seed {seed}"}
    if not train or not val:
        raise BadInput(f"corpus {path}: empty train or validation split")
    return Corpus(train, val, source)


def write_documents(path: Path, docs: list[str]) -> Path:
    return atomic_write_text(path, SEPARATOR.join(docs) + SEPARATOR)


# ---- Debian fortunes -----------------------------------------------------------------------

def clean_fortune(entry: str) -> str:
    lines = [_OVERSTRIKE.sub("", line).rstrip() for line in entry.split("\n")]
    return "\n".join(lines).strip("\n")


def fortune_entries(root: Path, files: tuple[str, ...] = FORTUNE_WHITELIST) -> tuple[list[str], dict]:
    """Clean, de-duplicated entries of the whitelisted files under an unpacked `root`."""
    seen, entries, per_file, dropped = set(), [], {}, 0
    for name in files:
        f = root / FORTUNE_DIR / name
        if not f.is_file():
            continue
        kept = 0
        for raw in re.split(r"^%$", f.read_text(encoding="utf-8", errors="replace"), flags=re.MULTILINE):
            entry = clean_fortune(raw)
            if not entry.strip() or entry in seen:
                continue
            if BLOCKLIST.search(entry):
                dropped += 1
                continue
            seen.add(entry)
            entries.append(entry)
            kept += 1
        per_file[name] = kept
    return entries, {"entries_per_file": per_file, "dropped_by_blocklist": dropped}


def build_fortunes(out: Path, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Write `train.txt`, `val.txt` and `source.json` for the whitelisted Debian fortunes."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="brushpen-fortunes-") as tmp:
        tmp = Path(tmp)
        packages = dict(unpack_deb(deb, tmp / "root") for deb in apt_download(FORTUNE_PACKAGES, tmp))
        entries, stats = fortune_entries(tmp / "root")
    if not entries:
        raise BadInput("no fortune entries found in the downloaded packages")
    train, val = holdout(entries, val_fraction, seed)
    write_documents(out / "train.txt", train)
    write_documents(out / "val.txt", val)
    source = {"source": "Debian packages (apt-get download)", "packages": packages,
              "licence": "BSD-style (see /usr/share/doc/fortunes/copyright)",
              "files": list(FORTUNE_WHITELIST), "val_fraction": val_fraction, "seed": seed,
              "train_entries": len(train), "val_entries": len(val),
              "train_chars": sum(map(len, train)), "val_chars": sum(map(len, val)), **stats}
    atomic_write_json(out / "source.json", source)
    return {"out": str(out), **{k: source[k] for k in ("packages", "train_entries", "val_entries",
                                                       "train_chars", "val_chars", "dropped_by_blocklist")}}
