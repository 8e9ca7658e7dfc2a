from __future__ import annotations

import math

import pytest
import torch

from r2r.losses import bce, infonce, infonce_prob, ranknet

# Two groups of G = 3: positive first. Row 0 ranks the positive on top, row 1 does not.
SCORES = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.5]]
ALL_LOSSES = [infonce, infonce_prob, bce, ranknet]


def _scores(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(SCORES, dtype=torch.float64, requires_grad=requires_grad)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_infonce_exact_value() -> None:
    # -log softmax(row)[0] = log(sum_j e^{s_j}) - s_0
    row0 = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)) - 2.0
    row1 = math.log(math.exp(0.5) + math.exp(1.5) + math.exp(0.5)) - 0.5
    assert row0 == pytest.approx(0.1698460, abs=1e-7)
    assert row1 == pytest.approx(1.5514448, abs=1e-7)
    assert infonce(_scores()).item() == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_infonce_temperature_exact_value() -> None:
    # τ = 0.5 doubles every score before the softmax.
    row0 = math.log(math.exp(4.0) + math.exp(0.0) + math.exp(-2.0)) - 4.0
    row1 = math.log(math.exp(1.0) + math.exp(3.0) + math.exp(1.0)) - 1.0
    got = infonce(_scores(), temperature=0.5).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_infonce_temperature_is_a_scaling() -> None:
    s = _scores()
    for tau in (0.05, 0.5, 2.0):
        assert infonce(s, temperature=tau).item() == pytest.approx(
            infonce(s / tau).item(), abs=1e-12
        )
        # Scaling scores and temperature together changes nothing.
        assert infonce(s * tau, temperature=tau).item() == pytest.approx(
            infonce(s).item(), abs=1e-12
        )


def test_infonce_and_ranknet_ignore_a_per_group_shift() -> None:
    s = _scores()
    shifted = s + torch.tensor([[10.0], [-3.0]], dtype=torch.float64)
    assert infonce(shifted).item() == pytest.approx(infonce(s).item(), abs=1e-12)
    assert ranknet(shifted).item() == pytest.approx(ranknet(s).item(), abs=1e-12)


def test_infonce_prob_exact_value() -> None:
    # p = sigmoid(m); loss = log(sum_j e^{p_j / τ}) - p_0 / τ
    p0 = [_sigmoid(2.0), 0.5, _sigmoid(-1.0)]  # 0.8807971, 0.5, 0.2689414
    p1 = [_sigmoid(0.5), _sigmoid(1.5), _sigmoid(0.5)]  # 0.6224593, 0.8175745, 0.6224593
    row0 = math.log(sum(math.exp(p) for p in p0)) - p0[0]
    row1 = math.log(sum(math.exp(p) for p in p1)) - p1[0]
    assert row0 == pytest.approx(0.8000535, abs=1e-7)
    assert row1 == pytest.approx(1.1679676, abs=1e-7)
    assert infonce_prob(_scores()).item() == pytest.approx((row0 + row1) / 2, abs=1e-12)

    tau = 0.1
    row0 = math.log(sum(math.exp(p / tau) for p in p0)) - p0[0] / tau
    row1 = math.log(sum(math.exp(p / tau) for p in p1)) - p1[0] / tau
    got = infonce_prob(_scores(), temperature=tau).item()
    assert got == pytest.approx((row0 + row1) / 2, abs=1e-12)


def test_infonce_prob_is_bounded_below_at_unit_temperature() -> None:
    # Probabilities live in (0, 1): even a perfect ranking keeps log(1 + (G-1)/e).
    perfect = torch.tensor([[50.0, -50.0, -50.0, -50.0]])
    floor = math.log(1.0 + 3.0 / math.e)
    assert infonce_prob(perfect).item() == pytest.approx(floor, abs=1e-6)
    assert infonce(perfect).item() == pytest.approx(0.0, abs=1e-6)


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
    assert bce(_scores()).item() == pytest.approx(expected, abs=1e-12)


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
    assert ranknet(_scores()).item() == pytest.approx(expected, abs=1e-12)


def test_pairwise_and_pointwise_losses_are_stable_for_huge_margins() -> None:
    right = torch.tensor([[1000.0, -1000.0]])
    wrong = torch.tensor([[-1000.0, 1000.0]])
    assert ranknet(right).item() == 0.0
    assert ranknet(wrong).item() == pytest.approx(2000.0)
    assert bce(right).item() == 0.0
    assert bce(wrong).item() == pytest.approx(1000.0)
    assert infonce(wrong).item() == pytest.approx(2000.0)


def test_infonce_gradient_is_softmax_minus_target() -> None:
    s = _scores(requires_grad=True)
    infonce(s).backward()
    assert s.grad is not None
    z = math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)
    # d/ds of the batch mean: (softmax - onehot) / B, B = 2.
    expected_row0 = [(math.exp(2.0) / z - 1) / 2, math.exp(0.0) / z / 2, math.exp(-1.0) / z / 2]
    assert s.grad[0].tolist() == pytest.approx(expected_row0, abs=1e-12)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gradients_push_positive_up_and_negatives_down(loss) -> None:
    s = _scores(requires_grad=True)
    loss(s).backward()
    assert s.grad is not None
    assert torch.isfinite(s.grad).all()
    # Gradient descent raises the positive and lowers every negative.
    assert (s.grad[:, 0] < 0).all()
    assert (s.grad[:, 1:] > 0).all()


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_returns_the_mean_of_per_group_losses(loss) -> None:
    s = _scores()
    per_group = [loss(s[i : i + 1]).item() for i in range(s.shape[0])]
    out = loss(s)
    assert out.ndim == 0
    assert out.item() == pytest.approx(sum(per_group) / len(per_group), abs=1e-12)


@pytest.mark.parametrize("loss", ALL_LOSSES)
@pytest.mark.parametrize("shape", [(4,), (3, 1), (2, 3, 4)])
def test_bad_shapes_raise(loss, shape) -> None:
    with pytest.raises(ValueError, match=r"shape|group size"):
        loss(torch.zeros(shape))


@pytest.mark.parametrize("loss", [infonce, infonce_prob])
@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_non_positive_temperature_raises(loss, tau) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        loss(_scores(), temperature=tau)
