"""Listwise, pairwise and pointwise reranking losses on logit margins.

Every loss is called as ``loss(scores, labels, teacher)``:

- ``scores``: the model's margins m = z_yes - z_no. Listwise and pairwise training give a
  (B, G) matrix, one row per example (a group, or a pair with G = 2), the positive (or the
  higher graded passage) in column 0; pointwise training gives a (N,) vector of rows.
- ``labels``: graded relevance of each score in [0, 1] (the qrels grade over the domain's
  top grade; 0 = not relevant), same shape.
- ``teacher``: a stronger reranker's scores for the same passages, same shape, or None.

Each returns the scalar mean over the batch. Hyper-parameters are keyword-only so configs
build the losses with ``_partial_: true``. `SHAPES` says which example shapes each loss
takes and `NEEDS_TEACHER` which read teacher scores; `check_loss` turns a bad pairing into
an error before any data is prepared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SHAPES",
    "bce",
    "check_loss",
    "distill_kl",
    "distill_mse",
    "infonce",
    "infonce_prob",
    "ranknet",
]

Loss = Callable[..., Tensor]


def _check_groups(scores: Tensor, labels: Tensor, name: str) -> None:
    if scores.ndim != 2:
        raise ValueError(
            f"{name}: scores must have shape (batch, group) with the positive in column 0, "
            f"got shape {tuple(scores.shape)} (is this loss used with training=pointwise?)"
        )
    if scores.shape[1] < 2:
        raise ValueError(
            f"{name}: each group needs the positive and at least one negative "
            f"(group size >= 2), got shape {tuple(scores.shape)}"
        )
    _check_like(labels, scores, name, "labels")


def _check_like(other: Tensor | None, scores: Tensor, name: str, what: str) -> None:
    if other is None:
        raise ValueError(f"{name} needs {what}; none were given")
    if other.shape != scores.shape:
        raise ValueError(
            f"{name}: {what} of shape {tuple(other.shape)} for scores {tuple(scores.shape)}"
        )


def _check_temperature(temperature: float, name: str) -> None:
    if not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")


def _column0(scores: Tensor) -> Tensor:
    return torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)


def infonce(
    scores: Tensor, labels: Tensor, teacher: Tensor | None = None, *, temperature: float
) -> Tensor:
    """InfoNCE as ms-swift / FlagEmbedding train rerankers: cross-entropy over the group.

    Inputs: ``scores`` (B, G), the positive in column 0; ``labels`` (B, G) only checked;
    ``teacher`` unused. Loss per group: -log softmax(scores / temperature)[0]; batch mean.
    """
    _check_groups(scores, labels, "infonce")
    _check_temperature(temperature, "infonce")
    return F.cross_entropy(scores / temperature, _column0(scores))


def infonce_prob(
    scores: Tensor, labels: Tensor, teacher: Tensor | None = None, *, temperature: float
) -> Tensor:
    """The paper-literal InfoNCE: softmax over the *probabilities* sigmoid(m) / temperature.

    Inputs as `infonce`. Loss per group: -log( exp(p_0/τ) / Σ_j exp(p_j/τ) ), p = σ(scores).
    Kept as an ablation: p lies in (0, 1), so at τ = 1 the loss can never go below
    log(1 + (G-1)/e), which weakens the gradient compared with ``infonce``.
    """
    _check_groups(scores, labels, "infonce_prob")
    _check_temperature(temperature, "infonce_prob")
    return F.cross_entropy(torch.sigmoid(scores) / temperature, _column0(scores))


def ranknet(scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
    """Pairwise logistic (RankNet) loss over every ordered pair of a group's passages.

    Inputs: ``scores`` (B, G) and ``labels`` (B, G) graded; a pair (i, j) of one group
    counts when labels[i] > labels[j]. Returns the mean of log(1 + exp(-(s_i - s_j))) over
    those pairs (a group of 1 positive and G-1 negatives gives the positive against each
    negative; a pair gives one term).
    """
    _check_groups(scores, labels, "ranknet")
    # (B, G, G): pair (i, j) of a row, i ahead of j by label.
    ahead = labels.unsqueeze(2) > labels.unsqueeze(1)
    if not ahead.any():
        raise ValueError("ranknet: no pair in the batch has different labels")
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)
    # softplus(-x) = log(1 + exp(-x)) without overflow for large |x|.
    return F.softplus(-diff)[ahead].mean()


def bce(scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of σ(score) against the label.

    Inputs: ``scores`` and ``labels`` of one shape, rows (N,) or groups (B, G); labels are
    graded relevance scaled to [0, 1] (the data module divides qrels grades by the
    domain's top grade: 0/1/2 -> 0, 0.5, 1), so a middle grade is a soft target.
    Returns the mean over every (query, passage) pair.
    """
    _check_like(labels, scores, "bce", "labels")
    return F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype))


def distill_mse(scores: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
    """Regression on a teacher's scores: mean of (score - teacher)^2 over every pair.

    Inputs: ``scores``, ``labels`` (unused) and ``teacher`` of one shape (rows or groups);
    the teacher's scores should be margins too (a yes/no reranker's logit differences).
    """
    _check_like(teacher, scores, "distill_mse", "teacher scores")
    return F.mse_loss(scores, teacher.to(scores.dtype))


def distill_kl(
    scores: Tensor, labels: Tensor, teacher: Tensor | None = None, *, temperature: float
) -> Tensor:
    """Listwise distillation (FlagEmbedding's): KL(softmax(teacher/τ) || softmax(scores/τ))
    per group, batch mean.

    Inputs: ``scores`` (B, G), ``labels`` (B, G) only checked, ``teacher`` (B, G).
    """
    _check_groups(scores, labels, "distill_kl")
    _check_like(teacher, scores, "distill_kl", "teacher scores")
    _check_temperature(temperature, "distill_kl")
    log_student = F.log_softmax(scores / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.to(scores.dtype) / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


# Which example shapes each loss takes: `groups` (listwise, B x G) and `pairs` (pairwise,
# B x 2) are both matrices with the better passage first; `rows` are pointwise vectors.
SHAPES: dict[Callable[..., Tensor], frozenset[str]] = {
    infonce: frozenset({"groups", "pairs"}),
    infonce_prob: frozenset({"groups", "pairs"}),
    ranknet: frozenset({"groups", "pairs"}),
    distill_kl: frozenset({"groups", "pairs"}),
    bce: frozenset({"groups", "pairs", "rows"}),
    distill_mse: frozenset({"groups", "pairs", "rows"}),
}
NEEDS_TEACHER = frozenset({distill_kl, distill_mse})


def check_loss(loss: Loss, shape: str, *, teacher: bool) -> None:
    """Raise if `loss` cannot train on examples of `shape` (with teacher scores or not)."""
    fn = loss.func if isinstance(loss, functools.partial) else loss
    if fn not in SHAPES:
        raise ValueError(f"{fn!r} is not one of r2r's losses ({[f.__name__ for f in SHAPES]})")
    if shape not in SHAPES[fn]:
        fits = sorted(SHAPES[fn])
        raise ValueError(
            f"loss {fn.__name__} cannot train on {shape} (it takes {fits}); pick another "
            f"loss= or training= (docs: README, 'Training modes')"
        )
    if fn in NEEDS_TEACHER and not teacher:
        raise ValueError(
            f"loss {fn.__name__} distils a teacher's scores: set training.teacher to a run "
            "file per domain (README, 'Training modes')"
        )
