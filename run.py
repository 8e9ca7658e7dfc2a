"""Entry point: `python run.py [overrides]` (see conf/ and the README)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from r2r.config import register_resolvers

register_resolvers()  # before Hydra composes the config that uses them


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from r2r import sweep
    from r2r.pipeline import launches_processes, run

    sweep.catch_signals()

    # `import lightning` gives the "lightning" logger a console handler of its own; Hydra's
    # root handlers already print (and write run.log), so each line would appear twice.
    lightning_log = logging.getLogger("lightning")
    for handler in list(lightning_log.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_log.removeHandler(handler)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if sweep.interrupted:  # an earlier job of this sweep was: the rest do not start
        return None
    try:
        if multirun and launches_processes(cfg):
            # DDP inside a multirun: this job as a single run of its own (see r2r.sweep).
            overrides = list(hydra_cfg.overrides.task)
            output = Path(hydra_cfg.runtime.output_dir)
            metrics = sweep.run_single(
                Path(__file__).resolve(), overrides, output, hydra_cfg.sweep.dir
            )
        else:
            metrics = run(cfg)
    except sweep.Interrupted as stop:
        if not multirun:
            raise SystemExit(stop.code) from None
        sweep.interrupted = stop  # SweepSummary writes the summary, then exits with its code
        return None
    except Exception:
        if multirun:
            # run() left failed.json; the other jobs go on and SweepSummary reports them all
            # (and fails the sweep) at the end.
            return None
        raise
    # A scalar return value lets Hydra sweepers optimise over runs.
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
