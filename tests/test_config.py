"""Every shipped config composes, and the cheap parts of each instantiate."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from r2r.data.mining import MiningSettings

CONF = Path(__file__).resolve().parents[1] / "conf"

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_groups_present() -> None:
    assert GROUPS == [
        "backbone",
        "curriculum",
        "data",
        "debug",
        "domain",
        "experiment",
        "hydra",
        "logger",
        "loss",
        "masking",
        "router",
        "sweep",
        "trainer",
        "training",
    ]


# Every option composing and resolving is checked by test_config_binding.py, which binds
# each composed option's keys to the signatures they feed.


def test_default_is_tiny_synthetic_on_all_domains(make_cfg) -> None:
    cfg = make_cfg()
    assert cfg.backbone._target_ == "r2r.models.backbones.load_tiny"
    assert cfg.data.name == "synthetic"
    assert list(cfg.domain.names) == ["legal", "medical", "finance"]
    assert sorted(cfg.data.sources) == ["finance", "legal", "medical"]
    # trainer=auto: the GPU in bf16 where CUDA is, else the CPU in fp32.
    assert cfg.trainer.accelerator == "auto"
    assert cfg.trainer.precision == ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    assert list(cfg.curriculum) == ["fine_tuned"] and cfg.curriculum.fine_tuned.init is None
    assert cfg.training.mode == "listwise" and cfg.loss._target_ == "r2r.losses.infonce"
    # The paper's LoRA settings stay the base defaults.
    assert (cfg.lora.r, cfg.lora.alpha) == (32, 64)
    assert list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]


LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_instantiate_to_callables(make_cfg, loss: str) -> None:
    fn = instantiate(make_cfg(f"loss={loss}").loss)
    scores, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    value = fn(scores, labels, torch.tensor([[0.0, 1.0, 2.0]]))  # a teacher that disagrees
    assert value.ndim == 0 and value.item() > 0


@pytest.mark.parametrize(
    ("mode", "loss"), [("listwise", "infonce"), ("pairwise", "ranknet"), ("pointwise", "bce")]
)
def test_each_training_mode_brings_its_loss_and_the_command_line_wins(make_cfg, mode, loss):
    cfg = make_cfg(f"training={mode}")
    assert (cfg.training.mode, cfg.loss._target_) == (mode, f"r2r.losses.{loss}")
    assert make_cfg(f"training={mode}", "loss=bce").loss._target_ == "r2r.losses.bce"


def test_mining_settings_instantiate(make_cfg) -> None:
    settings = instantiate(make_cfg("mining.top_k=7", "+mining.depth.legal=50").mining)
    assert settings == MiningSettings(
        top_k=7,
        depth={"legal": 50},
        include_positives=False,
        group_size=8,
        hard_negatives=4,
        hard_skip=0,
        hard_depth=30,
        seed=0,
    )


def test_trainers_instantiate(make_cfg) -> None:
    trainer = instantiate(make_cfg("debug=fast").trainer, logger=False)
    assert trainer.max_steps == 6


def test_real_data_selects_domains(make_cfg) -> None:
    cfg = make_cfg("data=real")
    assert sorted(cfg.data.sources) == ["finance", "legal", "medical"]
    assert cfg.data.sources.medical.raw.endswith("shared/data/medical/pubmedqa")
    assert make_cfg("experiment=smollm2_pubmedqa").domain.names == ["medical"]
    assert make_cfg("experiment=smollm2_real").domain.names == ["medical", "finance"]


def test_every_router_config_builds(make_cfg) -> None:
    from r2r.models.backbones import load_tiny
    from r2r.models.templates import QWEN3_RERANKER
    from r2r.routing import build_router

    cfg = make_cfg()
    assert list(cfg.routers) == ["none", "oracle", "lsr", "embedding_mlp", "tfidf", "random"]
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    for name, factory in instantiate(cfg.routers).items():
        router = build_router(factory, ["legal", "medical"], backbone=backbone)
        assert router.kind == name and router.domains == ("legal", "medical")


def test_slurm_launcher_composes_and_instantiates(tmp_path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.gpus_per_node=4",
                f"hydra.sweep.dir={tmp_path}",
                f"paths.root={tmp_path}",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    # One process per GPU, so that Lightning's DDP takes its ranks from Slurm.
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"
    assert isinstance(instantiate(launcher), SlurmLauncher)


SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_value_composes(tmp_path, sweep: str) -> None:
    """Each committed grid names real config keys and options: every job's overrides
    compose (a typo would otherwise surface only when the sweep reaches that job)."""
    from hydra import compose, initialize_config_dir

    paths = [f"paths.root={tmp_path}", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        grid = compose(
            config_name="config", overrides=[f"sweep={sweep}", *paths], return_hydra_config=True
        ).hydra.sweeper.params
        assert grid, sweep
        for key, values in grid.items():
            for value in str(values).split(","):
                cfg = compose(
                    config_name="config",
                    overrides=[f"sweep={sweep}", f"{key}={value}", *paths],
                    return_hydra_config=True,
                )
                choices = cfg.hydra.runtime.choices
                picked = choices[key] if key in choices else str(OmegaConf.select(cfg, key))
                assert picked == value


def test_wandb_sweep_runs_hydra_overrides(tmp_path) -> None:
    """conf/wandb_sweep.yaml: Table 1's two curricula; every value W&B would pass
    (`key=value`, no hyphens) is an option of its config group and composes as that
    choice, and the metric it maximises is one the job reports."""
    from hydra import compose, initialize_config_dir

    spec = OmegaConf.to_container(OmegaConf.load(CONF / "wandb_sweep.yaml"))
    assert spec["program"] == "run.py"
    assert "${args_no_hyphens}" in spec["command"] and "logger=wandb" in spec["command"]
    assert spec["parameters"]["curriculum"]["values"] == ["direct", "eag"]
    paths = [f"paths.root={tmp_path}", "logger=wandb"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for key, values in spec["parameters"].items():
            for value in values["values"]:
                assert (CONF / key / f"{value}.yaml").is_file(), f"{key}={value}"
                cfg = compose(
                    config_name="config",
                    overrides=[f"{key}={value}", *paths],
                    return_hydra_config=True,
                )
                assert cfg.hydra.runtime.choices[key] == value
                assert cfg.logger.wandb._target_ == "lightning.pytorch.loggers.WandbLogger"
        assert spec["metric"]["name"] == compose("config", overrides=paths).optimized_metric


HUB = {
    "qwen": "Qwen/Qwen3-Reranker-0.6B",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "gemma": "BAAI/bge-reranker-v2-gemma",
}


def test_a_models_root_holds_each_hub_backbone_under_its_hub_id(make_cfg, tmp_path) -> None:
    assert make_cfg("backbone=qwen").backbone.name_or_path == HUB["qwen"]
    for backbone, hub_id in HUB.items():
        (tmp_path / "models" / hub_id).mkdir(parents=True)
        cfg = make_cfg(f"backbone={backbone}", f"paths.models={tmp_path / 'models'}")
        assert cfg.backbone.name_or_path == str(tmp_path / "models" / hub_id)
    # A backbone's own folder wins over the root.
    (tmp_path / "own").mkdir()
    cfg = make_cfg(
        "backbone=gemma",
        f"paths.models={tmp_path / 'models'}",
        f"paths.backbones.gemma={tmp_path / 'own'}",
    )
    assert cfg.backbone.name_or_path == str(tmp_path / "own")


def test_a_sweep_over_backbones_gives_each_job_its_own_folder(tmp_path) -> None:
    """`-m backbone=qwen,mistral paths.models=ROOT paths.backbones.mistral=DIR`, as Hydra's
    sweeper splits it into jobs (before: `backbone.name_or_path=` failed in the sweep's own
    compose, `Key 'name_or_path' is not in struct`, and `++` gave both the same path)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (tmp_path / "models" / HUB["qwen"]).mkdir(parents=True)
    (tmp_path / "mistral").mkdir()
    args = [
        "backbone=qwen,mistral",
        f"paths.models={tmp_path / 'models'}",
        f"paths.backbones.mistral={tmp_path / 'mistral'}",
    ]
    [jobs] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # The sweep's own config: the default backbone with the non-sweep overrides.
        compose("config", overrides=[f"paths.root={tmp_path}", *args[1:]])
        paths = [
            compose("config", overrides=[f"paths.root={tmp_path}", *job]).backbone.name_or_path
            for job in jobs
        ]
    assert paths == [str(tmp_path / "models" / HUB["qwen"]), str(tmp_path / "mistral")]


def test_a_missing_model_folder_fails_naming_the_path_it_expected(make_cfg, tmp_path) -> None:
    cfg = make_cfg("backbone=mistral", f"paths.models={tmp_path}")
    expected = tmp_path / "mistralai" / "Mistral-7B-Instruct-v0.3"
    with pytest.raises(
        InterpolationResolutionError, match=re.escape(f"model folder at {expected} ")
    ):
        OmegaConf.to_container(cfg, resolve=True)
    cfg = make_cfg("backbone=qwen", f"paths.backbones.qwen={tmp_path / 'nowhere'}")
    with pytest.raises(
        InterpolationResolutionError, match=re.escape("nowhere (from paths.backbones")
    ):
        OmegaConf.to_container(cfg, resolve=True)


def test_every_path_key_is_left_out_of_job_names(make_cfg) -> None:
    """A path in a job's directory name would nest folders: every key under `paths` (the
    models and raw-data folders too) is excluded from `override_dirname`."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={CONF.parent}"], return_hydra_config=True)
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    leaves = {
        f"paths.{k}" if not isinstance(v, dict) else f"paths.{k}.{kk}"
        for k, v in OmegaConf.to_container(cfg.paths).items()
        for kk in (v if isinstance(v, dict) else [None])
    }
    assert "paths.backbones.gemma" in leaves and leaves <= excluded


def test_real_data_is_read_from_the_named_raw_data_folder(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("data=real", f"paths.raw_data={tmp_path}")
    assert {d: source.raw for d, source in cfg.data.sources.items()} == {
        "legal": f"{tmp_path}/legal/aila2019",
        "medical": f"{tmp_path}/medical/pubmedqa",
        "finance": f"{tmp_path}/finance/tatqa",
    }
    # $R2R_DATA, when no override names one.
    monkeypatch.setenv("R2R_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    cfg = make_cfg("data=pubmedqa")
    assert cfg.data.sources.medical.raw == f"{tmp_path}/env/medical/pubmedqa"


def test_real_data_without_its_folder_fails_before_any_model_loads(make_cfg, tmp_path, monkeypatch):
    from r2r import pipeline
    from r2r.models import backbones
    from r2r.sweep import FAILED

    loaded = []
    monkeypatch.setattr(backbones, "load_hub", lambda *a, **k: loaded.append(a))
    cfg = make_cfg("data=real", "backbone=qwen", f"paths.raw_data={tmp_path / 'nowhere'}")
    message = f"paths.raw_data={tmp_path / 'nowhere'} is not a folder"
    with pytest.raises(InterpolationResolutionError, match=re.escape(message)) as error:
        pipeline.run(cfg)
    assert "docs/data.md" in str(error.value) and loaded == []
    # Recorded as the job's failure, so that a sweep reports why.
    failure = json.loads((tmp_path / "out" / FAILED).read_text())
    assert message in failure["error"]


class FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None) -> datetime:
        return datetime(2026, 1, 2, 3, 4, 5)


def test_each_wandb_agent_run_gets_a_directory_of_its_own(tmp_path, monkeypatch) -> None:
    """`wandb agent` starts each run with WANDB_RUN_ID set: two runs started in the same
    second no longer share outputs/<date>/<time>."""
    from hydra import compose, initialize_config_dir

    monkeypatch.setattr("hydra.core.utils.datetime", FrozenClock)

    def run_dir() -> str:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.root={tmp_path}"], return_hydra_config=True)
        return cfg.hydra.run.dir

    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    assert run_dir() == "outputs/2026-01-02/03-04-05"
    dirs = []
    for run_id in ["a1b2c3d4", "e5f6g7h8"]:
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        dirs.append(run_dir())
    assert dirs == ["outputs/2026-01-02/03-04-05-a1b2c3d4", "outputs/2026-01-02/03-04-05-e5f6g7h8"]


@pytest.mark.parametrize(
    ("backbone", "lr", "lengths"),
    [
        ("tiny_qwen", 1e-3, (160, 48)),
        ("tiny_mistral", 1e-3, (160, 48)),
        ("smollm2", 1e-4, (256, 64)),
        ("qwen", 1e-4, (1024, 256)),
        ("mistral", 1e-4, (1024, 256)),
        ("gemma", 1e-4, (1024, 256)),
    ],
)
def test_a_backbone_brings_its_learning_rate_and_lengths(make_cfg, backbone, lr, lengths) -> None:
    """The tiny models' settings apply to them only: a real backbone gets the paper's 1e-4
    (before: `backbone=mistral` ran at the tiny default's 1e-3 with 160-token prompts)."""
    cfg = make_cfg(f"backbone={backbone}")
    assert cfg.optimizer.lr == lr
    assert (cfg.inputs.max_length, cfg.inputs.max_query_length) == lengths
    # An experiment or the command line still overrides them.
    assert make_cfg(f"backbone={backbone}", "optimizer.lr=3e-4").optimizer.lr == 3e-4


def test_auto_precision_is_bf16_where_cuda_is(monkeypatch) -> None:
    from r2r.config import precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision() == "32-true"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_default_trainer_takes_the_gpu_where_there_is_one(make_cfg) -> None:
    trainer = instantiate(make_cfg().trainer, logger=False)
    assert type(trainer.accelerator).__name__ == "CUDAAccelerator"
    assert trainer.precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true")


def test_the_probe_file_ships_with_the_package_whatever_the_working_directory(
    tmp_path,
) -> None:
    """`python /path/to/run.py` started elsewhere: paths.root is that directory, but the
    default probe questions are the package's own file (a run started in /tmp once failed
    at routing, looking for tmp/src/r2r/routing/probes.jsonl)."""
    from hydra import compose, initialize_config_dir

    from r2r.config import package_file
    from r2r.routing.probes import PROBES_FILE

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={tmp_path}"])
    assert cfg.routing.probes == str(PROBES_FILE.resolve())
    with pytest.raises(FileNotFoundError, match=r"r2r ships no file 'routing/nothing\.jsonl'"):
        package_file("routing/nothing.jsonl")
