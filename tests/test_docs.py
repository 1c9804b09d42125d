"""The docs stay true to the tree: every relative link in README.md, BENCHMARKS.md and docs/*.md
points at a file that exists (and at a heading that exists, when it names one), every `brushpen`
sub-command is in docs/cli.md, and every `BRUSHPEN_*` variable the code reads is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from brushpen.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: punctuation dropped (`_` and `-` kept), lower case, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: " + ", ".join(broken)


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out.extend(_commands(sub, f"{prefix} {name}"))
    return out


def test_every_command_is_in_the_cli_reference() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = _commands(build_parser(), "brushpen")
    assert len(commands) > 20
    # "brushpen data emoji | noto" in the index names both; a group's word must appear with its parent
    missing = [c for c in commands
               if c not in text and not re.search(re.escape(c.rsplit(" ", 1)[0]) + r"[^\n]*\b"
                                                  + re.escape(c.rsplit(" ", 1)[1]) + r"\b", text)]
    assert not missing, missing


def test_every_environment_variable_is_documented() -> None:
    code = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "brushpen").rglob("*.py"))
    docs = " ".join(p.read_text(encoding="utf-8") for p in PAGES)
    used = set(re.findall(r"BRUSHPEN_[A-Z_]+[A-Z]", code))
    assert used, "no BRUSHPEN_* variable found in the code"
    assert not sorted(used - set(re.findall(r"BRUSHPEN_[A-Z_]+[A-Z]", docs)))
