from __future__ import annotations

import functools
import math

import pytest
import torch

from r2r.losses import bce, check_loss, distill_kl, distill_mse, infonce, infonce_prob, ranknet

# Two groups of G = 3: positive first. Row 0 ranks the positive on top, row 1 does not.
SCORES = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.5]]
LABELS = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
ALL_LOSSES = [
    functools.partial(infonce, temperature=1.0),
    functools.partial(infonce_prob, temperature=1.0),
    bce,
    ranknet,
]
IDS = ["infonce", "infonce_prob", "bce", "ranknet"]


def _scores(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(SCORES, dtype=torch.float64, requires_grad=requires_grad)


def _labels(scores: torch.Tensor | None = None) -> torch.Tensor:
    """1 for each group's column 0, 0 elsewhere (the listwise groups' labels)."""
    if scores is None:
        return torch.tensor(LABELS, dtype=torch.float64)
    labels = torch.zeros_like(scores)
    labels[..., 0] = 1.0
    return labels


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_infonce_exact_value() -> None:
    # -log softmax(row)[0] = log(sum_j e^{s_j}) - s_0
    row0 = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)) - 2.0
    row1 = math.log(math.exp(0.5) + math.exp(1.5) + math.exp(0.5)) - 0.5
    assert row0 == pytest.approx(0.1698460, abs=1e-7)
    assert row1 == pytest.approx(1.5514448, abs=1e-7)
    assert infonce(_scores(), _labels(), temperature=1.0).item() == pytest.approx(
        (row0 + row1) / 2, abs=1e-12
    )


def test_infonce_temperature_exact_value() -> None:
    # τ = 0.5 doubles every score before the softmax.
    row0 = math.log(math.exp(4.0) + math.exp(0.0) + math.exp(-2.0)) - 4.0
    row1 = math.log(math.exp(1.0) + math.exp(3.0) + math.exp(1.0)) - 1.0
    got = infonce(_scores(), _labels(), temperature=0.5).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_infonce_temperature_is_a_scaling() -> None:
    s = _scores()
    for tau in (0.05, 0.5, 2.0):
        y = _labels()
        assert infonce(s, y, temperature=tau).item() == pytest.approx(
            infonce(s / tau, y, temperature=1.0).item(), abs=1e-12
        )
        # Scaling scores and temperature together changes nothing.
        assert infonce(s * tau, y, temperature=tau).item() == pytest.approx(
            infonce(s, y, temperature=1.0).item(), abs=1e-12
        )


def test_infonce_and_ranknet_ignore_a_per_group_shift() -> None:
    s = _scores()
    shifted = s + torch.tensor([[10.0], [-3.0]], dtype=torch.float64)
    y = _labels()
    assert infonce(shifted, y, temperature=1.0).item() == pytest.approx(
        infonce(s, y, temperature=1.0).item(), abs=1e-12
    )
    assert ranknet(shifted, y).item() == pytest.approx(ranknet(s, y).item(), abs=1e-12)


def test_infonce_prob_exact_value() -> None:
    # p = sigmoid(m); loss = log(sum_j e^{p_j / τ}) - p_0 / τ
    p0 = [_sigmoid(2.0), 0.5, _sigmoid(-1.0)]  # 0.8807971, 0.5, 0.2689414
    p1 = [_sigmoid(0.5), _sigmoid(1.5), _sigmoid(0.5)]  # 0.6224593, 0.8175745, 0.6224593
    row0 = math.log(sum(math.exp(p) for p in p0)) - p0[0]
    row1 = math.log(sum(math.exp(p) for p in p1)) - p1[0]
    assert row0 == pytest.approx(0.8000535, abs=1e-7)
    assert row1 == pytest.approx(1.1679676, abs=1e-7)
    assert infonce_prob(_scores(), _labels(), temperature=1.0).item() == pytest.approx(
        (row0 + row1) / 2, abs=1e-12
    )

    tau = 0.1
    row0 = math.log(sum(math.exp(p / tau) for p in p0)) - p0[0] / tau
    row1 = math.log(sum(math.exp(p / tau) for p in p1)) - p1[0] / tau
    got = infonce_prob(_scores(), _labels(), temperature=tau).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_infonce_prob_is_bounded_below_at_unit_temperature() -> None:
    # Probabilities live in (0, 1): even a perfect ranking keeps log(1 + (G-1)/e).
    perfect = torch.tensor([[50.0, -50.0, -50.0, -50.0]])
    floor = math.log(1.0 + 3.0 / math.e)
    assert infonce_prob(perfect, _labels(perfect), temperature=1.0).item() == pytest.approx(
        floor, abs=1e-6
    )
    assert infonce(perfect, _labels(perfect), temperature=1.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_bce_exact_value() -> None:
    # -log σ(s) for the positive, -log(1 - σ(s)) = log(1 + e^{s}) for negatives.
    terms = [
        math.log(1 + math.exp(-2.0)),  # positive, m = 2
        math.log(1 + math.exp(0.0)),  # negative, m = 0
        math.log(1 + math.exp(-1.0)),  # negative, m = -1
        math.log(1 + math.exp(-0.5)),  # positive, m = 0.5
        math.log(1 + math.exp(1.5)),  # negative, m = 1.5
        math.log(1 + math.exp(0.5)),  # negative, m = 0.5
    ]
    expected = sum(terms) / 6  # mean over all B * G pairs
    assert expected == pytest.approx(0.7138174, abs=1e-7)
    assert bce(_scores(), _labels()).item() == pytest.approx(expected, abs=1e-12)


def test_ranknet_exact_value() -> None:
    # Pairs (positive - negative): row 0 -> 2, 3; row 1 -> -1, 0.
    terms = [
        math.log(1 + math.exp(-2.0)),
        math.log(1 + math.exp(-3.0)),
        math.log(1 + math.exp(1.0)),
        math.log(1 + math.exp(0.0)),
    ]
    expected = sum(terms) / 4
    assert expected == pytest.approx(0.5454811, abs=1e-7)
    assert ranknet(_scores(), _labels()).item() == pytest.approx(expected, abs=1e-12)


def test_pairwise_and_pointwise_losses_are_stable_for_huge_margins() -> None:
    right = torch.tensor([[1000.0, -1000.0]])
    wrong = torch.tensor([[-1000.0, 1000.0]])
    y = _labels(right)
    assert ranknet(right, y).item() == 0.0
    assert ranknet(wrong, y).item() == pytest.approx(2000.0)
    assert bce(right, y).item() == 0.0
    assert bce(wrong, y).item() == pytest.approx(1000.0)
    assert infonce(wrong, y, temperature=1.0).item() == pytest.approx(2000.0)


def test_infonce_gradient_is_softmax_minus_target() -> None:
    s = _scores(requires_grad=True)
    infonce(s, _labels(), temperature=1.0).backward()
    assert s.grad is not None
    z = math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)
    # d/ds of the batch mean: (softmax - onehot) / B, B = 2.
    expected_row0 = [(math.exp(2.0) / z - 1) / 2, math.exp(0.0) / z / 2, math.exp(-1.0) / z / 2]
    assert s.grad[0].tolist() == pytest.approx(expected_row0, abs=1e-12)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
def test_gradients_push_positive_up_and_negatives_down(loss) -> None:
    s = _scores(requires_grad=True)
    loss(s, _labels()).backward()
    assert s.grad is not None
    assert torch.isfinite(s.grad).all()
    # Gradient descent raises the positive and lowers every negative.
    assert (s.grad[:, 0] < 0).all()
    assert (s.grad[:, 1:] > 0).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
def test_returns_the_mean_of_per_group_losses(loss) -> None:
    s, y = _scores(), _labels()
    per_group = [loss(s[i : i + 1], y[i : i + 1]).item() for i in range(s.shape[0])]
    out = loss(s, y)
    assert out.ndim == 0
    assert out.item() == pytest.approx(sum(per_group) / len(per_group), abs=1e-12)


@pytest.mark.parametrize("loss", [*ALL_LOSSES[:2], ranknet], ids=[*IDS[:2], "ranknet"])
@pytest.mark.parametrize("shape", [(4,), (3, 1), (2, 3, 4)])
def test_group_losses_reject_other_shapes(loss, shape) -> None:
    with pytest.raises(ValueError, match=r"shape|group size"):
        loss(torch.zeros(shape), torch.zeros(shape))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=IDS)
def test_labels_of_another_shape_raise(loss) -> None:
    with pytest.raises(ValueError, match=r"labels of shape \(2,\) for scores \(2, 3\)"):
        loss(_scores(), torch.zeros(2))


@pytest.mark.parametrize("loss", [infonce, infonce_prob])
@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_non_positive_temperature_raises(loss, tau) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        loss(_scores(), _labels(), temperature=tau)


# ---------------------------------------------------------------- graded labels, teachers


def test_ranknet_on_graded_groups_counts_every_ordered_pair() -> None:
    # One group, grades 1, 0.5, 0: pairs (0,1), (0,2), (1,2) with score gaps 1, 3, 2.
    scores = torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    terms = [
        math.log(1 + math.exp(-1.0)),
        math.log(1 + math.exp(-3.0)),
        math.log(1 + math.exp(-2.0)),
    ]
    assert sum(terms) / 3 == pytest.approx(0.1629257, abs=1e-7)
    assert ranknet(scores, labels).item() == pytest.approx(sum(terms) / 3, abs=1e-12)


def test_ranknet_on_pairs_exact_value() -> None:
    # training=pairwise: (better, worse) rows; the second pair is ranked the wrong way.
    scores = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert expected == pytest.approx(1.2200948, abs=1e-7)
    assert ranknet(scores, labels).item() == pytest.approx(expected, abs=1e-12)


def test_ranknet_needs_two_different_labels() -> None:
    with pytest.raises(ValueError, match="no pair in the batch has different labels"):
        ranknet(torch.zeros(1, 2), torch.ones(1, 2))


def test_bce_on_pointwise_rows_with_a_middle_grade() -> None:
    # Rows with labels 1, 0.5, 0 (grades 2, 1, 0 of a 0-2 scale): soft target for the middle.
    scores = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    labels = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    terms = [
        math.log(1 + math.exp(-1.0)),  # -log σ(1)
        math.log(2.0),  # σ(0) = 0.5 against 0.5: -0.5 log 0.5 - 0.5 log 0.5
        math.log(1 + math.exp(-2.0)),  # -log(1 - σ(-2))
    ]
    assert sum(terms) / 3 == pytest.approx(0.3777790, abs=1e-7)
    assert bce(scores, labels).item() == pytest.approx(sum(terms) / 3, abs=1e-12)


def test_distill_mse_exact_value() -> None:
    scores = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    teacher = torch.tensor([3.0, 0.5, -2.0], dtype=torch.float64)
    # (1-3)^2 + (0-0.5)^2 + 0 = 4.25 over 3 rows.
    assert distill_mse(scores, torch.zeros(3), teacher).item() == pytest.approx(4.25 / 3)


def test_distill_kl_exact_value() -> None:
    scores = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)  # softmax: 3/4, 1/4
    # KL(p || q), p = (3/4, 1/4), q = (1/2, 1/2): 3/4 log(3/2) + 1/4 log(1/2).
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert expected == pytest.approx(0.1308120, abs=1e-7)
    got = distill_kl(scores, torch.tensor([[1.0, 0.0]]), teacher, temperature=1.0).item()
    assert got == pytest.approx(expected, abs=1e-12)
    # Equal distributions: nothing to learn.
    assert distill_kl(teacher, torch.tensor([[1.0, 0.0]]), teacher, temperature=2.0).item() == (
        pytest.approx(0.0, abs=1e-12)
    )


@pytest.mark.parametrize("loss", [distill_mse, functools.partial(distill_kl, temperature=1.0)])
def test_distillation_without_teacher_scores_raises(loss) -> None:
    with pytest.raises(ValueError, match="needs teacher scores"):
        loss(_scores(), _labels(), None)


@pytest.mark.parametrize(
    ("loss", "shape", "teacher", "error"),
    [
        (
            functools.partial(infonce, temperature=1.0),
            "rows",
            False,
            "infonce cannot train on rows",
        ),
        (ranknet, "rows", False, "ranknet cannot train on rows"),
        (functools.partial(distill_kl, temperature=1.0), "rows", True, "cannot train on rows"),
        (distill_mse, "rows", False, "distill_mse distils a teacher"),
        (functools.partial(distill_kl, temperature=1.0), "groups", False, "set training.teacher"),
    ],
)
def test_check_loss_refuses_pairings_that_cannot_train(loss, shape, teacher, error) -> None:
    with pytest.raises(ValueError, match=error):
        check_loss(loss, shape, teacher=teacher)


@pytest.mark.parametrize(
    ("loss", "shape", "teacher"),
    [
        (functools.partial(infonce, temperature=1.0), "groups", False),
        (functools.partial(infonce, temperature=1.0), "pairs", False),
        (ranknet, "pairs", False),
        (bce, "rows", False),
        (bce, "groups", False),
        (distill_mse, "rows", True),
        (functools.partial(distill_kl, temperature=1.0), "groups", True),
    ],
)
def test_check_loss_accepts_pairings_that_train(loss, shape, teacher) -> None:
    check_loss(loss, shape, teacher=teacher)
