from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from r2r.config import register_resolvers

register_resolvers()

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides, outside a Hydra run (paths point at tmp)."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[
                    f"paths.root={ROOT}",
                    f"paths.output={tmp_path / 'out'}",
                    f"paths.cache={tmp_path / 'cache'}",
                    *overrides,
                ],
            )

    return _make


@pytest.fixture
def multirun(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python run.py -m debug=fast OVERRIDES` in a child process, as a user would: the
    sweep in tmp_path/sweep, its caches in tmp_path/cache, one thread per process."""

    def _run(
        *overrides: str, env: dict[str, str] | None = None, timeout: int = 600
    ) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "run.py",
            "-m",
            "debug=fast",
            f"paths.cache={tmp_path / 'cache'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *overrides,
        ]
        return subprocess.run(
            command,
            cwd=ROOT,
            env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run
