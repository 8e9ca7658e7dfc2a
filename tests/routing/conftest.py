from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from r2r.models.backbones import load_tiny
from r2r.models.experts import add_lora, save_adapter
from r2r.models.templates import QWEN3_RERANKER


@pytest.fixture(scope="module")
def random_experts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., dict[str, Path]]:
    """Saved tiny-Qwen experts whose LoRA weights are random (seeded per expert), so each
    changes scores differently: domain -> adapter folder."""

    def make(domains: Sequence[str], *, scale: float) -> dict[str, Path]:
        root = tmp_path_factory.mktemp("experts")
        out = {}
        for k, domain in enumerate(domains):
            model = add_lora(load_tiny("qwen", template=QWEN3_RERANKER, seed=0).model, r=4, alpha=8)
            gen = torch.Generator().manual_seed(k)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_" in name:
                        p.copy_(torch.randn(p.shape, generator=gen) * scale)
            out[domain] = save_adapter(model, root / domain)
        return out

    return make
