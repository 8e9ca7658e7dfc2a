"""Classifier heads over fixed query features: logits over domains (softmax outside)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

HeadKind = Literal["linear", "mlp"]
HEADS: tuple[HeadKind, ...] = ("linear", "mlp")


def make_head(
    kind: HeadKind, dim: int, n_classes: int, *, hidden: int = 256, dropout: float = 0.0
) -> nn.Module:
    """(N, dim) features -> (N, n_classes) logits.

    linear: the paper's router, p(d|q) = softmax(W h_q + b).
    mlp: Linear(dim, hidden) - GELU - Dropout - Linear(hidden, n_classes).
    """
    if dim < 1 or n_classes < 1:
        raise ValueError(f"a head needs dim >= 1 and n_classes >= 1, got {dim} and {n_classes}")
    if kind == "linear":
        return nn.Linear(dim, n_classes)
    if kind == "mlp":
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp head: hidden={hidden} must be >= 1, dropout={dropout} in [0, 1)")
        return nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )
    raise ValueError(f"unknown router head {kind!r}; expected one of {HEADS}")


class Standardize(nn.Module):
    """(N, dim) -> (N, dim) z-scores with a training set's per-dimension mean and std.

    LLM hidden states carry a few dimensions hundreds of times larger than the rest; unscaled,
    they would dominate the head's first steps. Buffers, not parameters: nothing is learned,
    and identity until `fit` is called.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, features: torch.Tensor) -> Standardize:
        self.mean.copy_(features.mean(dim=0))
        std = features.std(dim=0, unbiased=False)
        # A constant dimension is only centred: dividing by ~0 would blow up unseen values.
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def balanced_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes,) cross-entropy weights n / (k * n_c) over (N,) label ids, k the number of
    classes present (scikit-learn's class_weight="balanced"): every present class weighs the
    same in the loss, whatever its share of the data; absent classes get 0."""
    counts = torch.bincount(labels, minlength=n_classes).float()  # (n_classes,)
    present = counts > 0
    weights = torch.zeros(n_classes)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights
