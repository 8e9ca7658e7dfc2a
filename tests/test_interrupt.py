"""Preemption: SIGTERM during training ends a run, or a whole sweep, with status 143 (never
0), failed.json saying where, and the sweep's summary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

LONG = ["trainer.max_steps=100000", "trainer.limit_val_batches=0", "routing.enabled=false"]


def start(folder: Path, *overrides: str, flags: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "run.py",
            *flags,
            "debug=fast",
            f"paths.cache={folder.parent / 'cache'}",
            *LONG,
            *overrides,
        ],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def terminate_when_training(process: subprocess.Popen, timeout: float = 240) -> str:
    """SIGTERM once the log says an adapter is training; the whole output after the exit."""
    seen, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if "training the legal adapter" in line:
            time.sleep(1.0)  # inside Lightning's fit loop
            process.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(seen)
    seen.append(process.stdout.read())
    process.wait(60)
    return "".join(seen)


# The step is named once one has run (on a loaded machine the signal can come first).
WHERE = "interrupted by SIGTERM at stage fine_tuned, the legal adapter(, step [0-9]+)?"


def test_sigterm_during_training_ends_a_sweep_with_143_and_its_summary(tmp_path: Path) -> None:
    sweep = start(
        tmp_path / "sweep",
        "domain=legal,medical",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        flags=("-m",),
    )
    log = terminate_when_training(sweep)
    assert sweep.returncode == 143, log[-3000:]
    first, second = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert first.startswith("0_") and second.startswith("1_")
    assert "0 jobs finished, 1 failed, 1 did not finish" in log
    assert re.search(f"the sweep was {WHERE}; re-run the command", log)
    failure = json.loads((tmp_path / "sweep" / first / "failed.json").read_text())
    assert re.fullmatch(f"Interrupted: {WHERE}", failure["error"]), failure["error"]
    # The second job did not start: Hydra's folder only.
    assert sorted(p.name for p in (tmp_path / "sweep" / second).iterdir()) == [".hydra", "run.log"]


@pytest.mark.slow  # the same path as the sweep's, but for run.py's single-run exit
def test_sigterm_during_training_ends_a_run_with_143(tmp_path: Path) -> None:
    run = start(tmp_path / "run", "domain=legal", f"hydra.run.dir={tmp_path / 'run'}")
    log = terminate_when_training(run)
    assert run.returncode == 143, log[-3000:]
    failure = json.loads((tmp_path / "run" / "failed.json").read_text())
    assert re.fullmatch(f"Interrupted: {WHERE}", failure["error"]), failure["error"]
    assert not (tmp_path / "run" / "results.json").exists()
