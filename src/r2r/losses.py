"""Listwise, pointwise and pairwise reranking losses on logit margins.

Every loss takes ``scores`` of shape (B, G): one row per training group, the
margin m = z_yes - z_no of each candidate, the positive in column 0 and the
G - 1 negatives after it. Each returns the scalar mean over the batch.
Hyper-parameters are keyword-only so configs can build them with ``_partial_: true``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bce", "infonce", "infonce_prob", "ranknet"]


def _check_groups(scores: Tensor, name: str) -> None:
    if scores.ndim != 2:
        raise ValueError(
            f"{name}: scores must have shape (batch, group) with the positive in column 0, "
            f"got shape {tuple(scores.shape)}"
        )
    if scores.shape[1] < 2:
        raise ValueError(
            f"{name}: each group needs the positive and at least one negative "
            f"(group size >= 2), got shape {tuple(scores.shape)}"
        )


def _check_temperature(temperature: float, name: str) -> None:
    if not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")


def infonce(scores: Tensor, *, temperature: float = 1.0) -> Tensor:
    """InfoNCE as ms-swift / FlagEmbedding train rerankers: cross-entropy over the group.

    Inputs: ``scores`` (B, G) logit margins, positive in column 0, negatives after.
    Loss per group: -log softmax(scores / temperature)[0]; returns the batch mean.
    """
    _check_groups(scores, "infonce")
    _check_temperature(temperature, "infonce")
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores / temperature, target)


def infonce_prob(scores: Tensor, *, temperature: float = 1.0) -> Tensor:
    """The paper-literal InfoNCE: softmax over the *probabilities* sigmoid(m) / temperature.

    Inputs: ``scores`` (B, G) logit margins, positive in column 0, negatives after.
    Loss per group: -log( exp(p_0/τ) / Σ_j exp(p_j/τ) ), p = sigmoid(scores); batch mean.
    Kept as an ablation: p lies in (0, 1), so at τ = 1 the loss can never go below
    log(1 + (G-1)/e), which weakens the gradient compared with ``infonce``.
    """
    _check_groups(scores, "infonce_prob")
    _check_temperature(temperature, "infonce_prob")
    probs = torch.sigmoid(scores)
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(probs / temperature, target)


def bce(scores: Tensor) -> Tensor:
    """Pointwise binary cross-entropy on the margins (label 1 for column 0, else 0).

    Inputs: ``scores`` (B, G) logit margins, positive in column 0, negatives after.
    Returns the mean over all B * G (query, passage) pairs.
    """
    _check_groups(scores, "bce")
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(scores, labels)


def ranknet(scores: Tensor) -> Tensor:
    """Pairwise logistic (RankNet) loss of the positive against each negative.

    Inputs: ``scores`` (B, G) logit margins, positive in column 0, negatives after.
    Returns the mean over (b, j >= 1) of log(1 + exp(-(s_b0 - s_bj))).
    """
    _check_groups(scores, "ranknet")
    # (B, G-1): how far the positive is ahead of each negative.
    diff = scores[:, :1] - scores[:, 1:]
    # softplus(-x) = log(1 + exp(-x)) without overflow for large |x|.
    return F.softplus(-diff).mean()
