from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from r2r.models.backbones import load_tiny
from r2r.models.experts import ExpertBank, add_lora, save_adapter
from r2r.models.templates import QWEN3_RERANKER
from r2r.routing import FeatureRouter, Router

CONF = Path(__file__).resolve().parents[2] / "conf"


def shipped_router(name: str) -> Any:
    """conf/router/<name>.yaml with `${seed}` and `${routing.balanced}` resolved from
    conf/config.yaml."""
    main = OmegaConf.load(CONF / "config.yaml")
    return OmegaConf.create(
        {
            "seed": main.seed,
            "routing": {"balanced": main.routing.balanced},
            "router": OmegaConf.load(CONF / "router" / f"{name}.yaml"),
        }
    )


@pytest.fixture(scope="session")
def router_factory() -> Callable[..., functools.partial[Router]]:
    """The shipped config's router partial, as the pipeline builds it (`instantiate`), with
    `overrides` replacing YAML values: pass it to `build_router`."""

    def make(name: str, **overrides: Any) -> functools.partial[Router]:
        return instantiate(shipped_router(name).router, **overrides)

    return make


@pytest.fixture(scope="session")
def head_settings() -> Callable[..., dict[str, Any]]:
    """A `FeatureRouter`'s head and training settings as conf/router/lsr.yaml ships them,
    with `overrides` replacing them."""
    keys = [
        p.name
        for p in inspect.signature(FeatureRouter).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]

    def make(**overrides: Any) -> dict[str, Any]:
        lsr = OmegaConf.to_container(shipped_router("lsr").router, resolve=True)
        return {**{k: lsr[k] for k in keys}, **overrides}

    return make


@pytest.fixture(scope="session")
def lora() -> Callable[..., dict[str, Any]]:
    """`add_lora` settings: conf/config.yaml's `lora` node with `overrides` (e.g. r, alpha)."""

    def make(**overrides: Any) -> dict[str, Any]:
        return {**OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").lora), **overrides}

    return make


@pytest.fixture(scope="session")
def expert_bank() -> Callable[..., ExpertBank]:
    """`adapters` on a fresh tiny Qwen, as the pipeline builds the bank: the `inputs` of
    conf/config.yaml and of the tiny_qwen backbone option (`inputs` replacing them), and the
    eval batch size."""

    def make(adapters: dict[str, Path], **inputs: Any) -> ExpertBank:
        cfg = OmegaConf.merge(
            OmegaConf.load(CONF / "config.yaml"),
            OmegaConf.load(CONF / "backbone" / "tiny_qwen.yaml"),
        )
        return ExpertBank(
            load_tiny("qwen", template=QWEN3_RERANKER, seed=0),
            adapters,
            inputs={**OmegaConf.to_container(cfg.inputs), **inputs},
            batch_size=cfg.datamodule.eval_batch_size,
            scorer=OmegaConf.to_container(cfg.scorer),
        )

    return make


@pytest.fixture(scope="module")
def random_experts(
    tmp_path_factory: pytest.TempPathFactory, lora: Callable[..., dict[str, Any]]
) -> Callable[..., dict[str, Path]]:
    """Saved tiny-Qwen experts whose LoRA weights are random (seeded per expert), so each
    changes scores differently: domain -> adapter folder."""

    def make(domains: Sequence[str], *, scale: float) -> dict[str, Path]:
        root = tmp_path_factory.mktemp("experts")
        out = {}
        for k, domain in enumerate(domains):
            model = add_lora(
                load_tiny("qwen", template=QWEN3_RERANKER, seed=0).model, **lora(r=4, alpha=8)
            )
            gen = torch.Generator().manual_seed(k)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.copy_(torch.randn(p.shape, generator=gen) * scale)
            out[domain] = save_adapter(model, root / domain)
        return out

    return make
