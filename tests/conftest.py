from __future__ import annotations

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
