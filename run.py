"""Entry point: `python run.py [overrides]` (see conf/ and the README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from r2r.pipeline import run

    metrics = run(cfg)
    # A scalar return value lets Hydra sweepers optimise over runs.
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
