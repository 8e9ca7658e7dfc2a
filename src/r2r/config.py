"""OmegaConf resolvers that the YAML config uses; `run.py` registers them before Hydra
composes (tests register them in conftest)."""

from __future__ import annotations

import os
from pathlib import Path

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


def model_path(hub_id: str, folder: str | None, models: str | None) -> str:
    """Where a hub backbone loads from: its own folder (`paths.backbones.<option>`), else
    `<paths.models>/<org>/<name>` (the hub id's layout, as `hf download ID --local-dir
    <paths.models>/ID` writes it), else the hub id itself (the Hugging Face cache or the hub).
    A folder that was named but is missing fails at once, naming the path it expected."""
    if folder is None and models is None:
        return hub_id
    path = Path(folder if folder is not None else Path(models) / hub_id).expanduser()
    if not path.is_dir():
        key = "paths.backbones" if folder is not None else f"paths.models={models}"
        raise FileNotFoundError(
            f"{hub_id}: no model folder at {path} (from {key}); download it with "
            f"`hf download {hub_id} --local-dir {path}`"
        )
    return str(path)


def raw_data(root: str, dataset: str) -> str:
    """`<paths.raw_data>/<dataset>`: the raw files a real data source converts. Fails at
    once (when the config is resolved, before any model is loaded) if the raw-data folder
    itself is missing; a missing file inside it is reported by the source's converter."""
    if not Path(root).expanduser().is_dir():
        raise FileNotFoundError(
            f"paths.raw_data={root} is not a folder: the real data sets are read from there. "
            "Download them as docs/data.md describes, then set R2R_DATA=FOLDER or "
            "paths.raw_data=FOLDER"
        )
    return str(Path(root).expanduser() / dataset)


def run_suffix() -> str:
    """`-<W&B run id>` under a W&B sweep agent (which sets WANDB_RUN_ID for each run it
    starts), else nothing: agents starting runs in the same second get directories of their
    own instead of sharing `outputs/<date>/<time>`."""
    run_id = os.environ.get("WANDB_RUN_ID")
    return f"-{run_id}" if run_id else ""


def precision() -> str:
    """`bf16-mixed` where CUDA is available and supports bf16, else `32-true` (the CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def package_file(relative: str) -> str:
    """A file shipped inside the r2r package (`${r2r.package_file:routing/probes.jsonl}`):
    found wherever r2r is installed and whichever directory `run.py` starts in."""
    path = Path(__file__).resolve().parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"r2r ships no file {relative!r} (looked for {path})")
    return str(path)


def register_resolvers() -> None:
    resolvers = {
        "r2r.job_name": job_name,
        "r2r.sweep_group": sweep_group,
        "r2r.precision": precision,
        "r2r.model_path": model_path,
        "r2r.raw_data": raw_data,
        "r2r.run_suffix": run_suffix,
        "r2r.package_file": package_file,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
