"""Every shipped config composes, and the cheap parts of each instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

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
    settings = instantiate(make_cfg("mining.top_k=7").mining)
    assert settings == MiningSettings(
        top_k=7,
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


def test_wandb_sweep_runs_hydra_overrides(make_cfg) -> None:
    """conf/wandb_sweep.yaml: every value W&B would pass (`key=value`, no hyphens) is a
    valid override, and the metric it maximises is one the job reports."""
    spec = OmegaConf.to_container(OmegaConf.load(CONF / "wandb_sweep.yaml"))
    assert spec["program"] == "run.py"
    assert "${args_no_hyphens}" in spec["command"] and "logger=wandb" in spec["command"]
    for key, values in spec["parameters"].items():
        for value in values["values"]:
            cfg = make_cfg(f"{key}={value}", "logger=wandb")
            assert cfg.logger.wandb._target_ == "lightning.pytorch.loggers.WandbLogger"
    assert spec["metric"]["name"] == make_cfg().optimized_metric


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
