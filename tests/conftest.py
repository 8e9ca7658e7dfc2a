from __future__ import annotations

import os

# One OpenMP thread per test process, set before torch is imported: the tests' models are
# tiny (hidden size 64), where a second thread costs more than it saves, and the suite runs
# in two pytest-xdist workers on a 2-core machine (more threads than cores spin against each
# other). Subprocesses (multiruns, DDP ranks) inherit it. An explicit setting wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


def start_multirun(folder: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python run.py -m debug=fast OVERRIDES` in a child process, as a user would: the
    sweep in folder/sweep, its caches in folder/cache, one thread per process."""

    def _run(
        *overrides: str, env: dict[str, str] | None = None, timeout: int = 600
    ) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "run.py",
            "-m",
            "debug=fast",
            f"paths.cache={folder / 'cache'}",
            f"hydra.sweep.dir={folder / 'sweep'}",
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


@pytest.fixture
def multirun(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """`start_multirun` into the test's own tmp_path."""
    return start_multirun(tmp_path)


def wandb_env(folder: Path) -> dict[str, str]:
    """W&B quiet, with its own folders (cache, config, artifact staging) under `folder`."""
    home = str(folder / "wandb_home")
    return {
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": home,
        "WANDB_CONFIG_DIR": home,
        "WANDB_DATA_DIR": home,
    }


# The one real sweep the sweep and notebook tests share (one run of it per test session):
# Table 1's two curricula on two routed domains, each job its own offline W&B run; and for
# each, a job that fails (an unknown deploy router, refused before any work) while the
# sweep goes on.
SHARED_SWEEP = (
    "logger=wandb",
    "curriculum=direct,eag",
    "routing.deploy=lsr,nonexistent",
    "domain.names=[legal,medical]",
    "~routers.embedding_mlp",
)


@dataclass(frozen=True)
class SharedSweep:
    folder: Path  # sweep/ (the jobs), cache/, wandb_home/
    done: subprocess.CompletedProcess

    @property
    def sweep(self) -> Path:
        return self.folder / "sweep"


@pytest.fixture(scope="session")
def shared_sweep(tmp_path_factory: pytest.TempPathFactory) -> SharedSweep:
    folder = tmp_path_factory.mktemp("shared_sweep")
    return SharedSweep(folder, start_multirun(folder)(*SHARED_SWEEP, env=wandb_env(folder)))
