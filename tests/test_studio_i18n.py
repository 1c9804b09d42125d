"""The studio's Korean labels: every label marked for translation has a Korean entry, and every
entry is used (read from the tab modules' source, so a renamed label cannot go stale quietly).
The browser test shows them on a page opened with a Korean locale."""

from __future__ import annotations

import ast
from pathlib import Path

from brushpen.studio_ui.i18n import I18N, KO

UI = Path(__file__).resolve().parents[1] / "brushpen" / "studio_ui"


def marked_labels() -> set[str]:
    labels = set()
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "t":
                assert isinstance(node.args[0], ast.Constant), f"{path.name}: t() takes a literal label"
                labels.add(node.args[0].value)
    return labels


def test_every_marked_label_has_korean_and_every_entry_is_used() -> None:
    labels = marked_labels()
    assert len(labels) > 70
    assert labels - set(KO) == set()
    assert set(KO) - labels == set()
    assert all(KO[k] and KO[k] != k or k in ("Top-p", "metrics.json") for k in KO)
    assert I18N.translations_dict["ko"]["Copy"] == "카피"
