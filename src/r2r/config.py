"""OmegaConf resolvers that the YAML config uses; `run.py` registers them before Hydra
composes (tests register them in conftest)."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from r2r.sweep import GROUP_ENV


def job_name() -> str | None:
    """The job's overrides as one string (`domain=legal,loss=bce`); None for a plain run
    with no overrides or outside a Hydra run, which lets W&B pick a name."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().job.get("override_dirname") or None


def sweep_group() -> str | None:
    """The multirun's sweep directory, so that every job of one sweep shares a W&B group
    (also when the job runs in a child process, see r2r.sweep.run_single); None for a
    single run."""
    if GROUP_ENV in os.environ:
        return os.environ[GROUP_ENV]
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get().sweep.dir


def precision() -> str:
    """`bf16-mixed` where CUDA is available and supports bf16, else `32-true` (the CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    resolvers = {
        "r2r.job_name": job_name,
        "r2r.sweep_group": sweep_group,
        "r2r.precision": precision,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
