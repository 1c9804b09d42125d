"""The fault-injection benchmark as a slow test: SIGKILL the real server during a fine-tuning job
more often than the retry limit allows a line that stops the server, and the job still resumes each
time from its checkpoint and ends with the adapter an uninterrupted run makes, bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from brushpen.generators.jobs import MAX_ATTEMPTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_finetune_killed_past_the_retry_limit_resumes_to_the_same_adapter() -> None:
    kills = MAX_ATTEMPTS + 1
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--job", "finetune",
                          "--family", "safety", "--kills", str(kills), "--jitter", "0.5"],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| safety |" in run.stdout and "every tensor bit for bit equal" in run.stdout
    assert run.stdout.count("(job in_progress)") == kills
