"""Each preference loss against values worked out by hand.

Shared case: log π_θ(y_w) = −2, log π_θ(y_l) = −5, log π_ref(y_w) = −3, log π_ref(y_l) = −4, so
h = (−2 + 3) − (−5 + 4) = 1 − (−1) = 2. With β = 0.5: β·h = 1, and
−log σ(1) = log(1 + e^−1) = 0.31326169, −log σ(−1) = log(1 + e) = 1.31326169.
"""

from __future__ import annotations

import pytest
import torch

from trainer.losses import (cdpo_loss, chosen_nll, hinge_loss, ipo_loss, logratio_margin, preference_loss,
                            robust_loss, sigmoid_loss)

SOFTPLUS_M1 = 0.31326169  # log(1 + e^-1)
SOFTPLUS_P1 = 1.31326169  # log(1 + e^1)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_margin() -> None:
    assert logratio_margin(t(-2.0), t(-5.0), t(-3.0), t(-4.0)).item() == pytest.approx(2.0)


def test_sigmoid() -> None:
    assert sigmoid_loss(t(2.0), 0.5).item() == pytest.approx(SOFTPLUS_M1, abs=1e-8)
    # zero margin: ln 2, the value every DPO run starts from
    assert sigmoid_loss(t(0.0), 0.1).item() == pytest.approx(0.69314718, abs=1e-8)


def test_cdpo() -> None:
    # 0.9 * 0.31326169 + 0.1 * 1.31326169 = 0.28193552 + 0.13132617
    assert cdpo_loss(t(2.0), 0.5, 0.1).item() == pytest.approx(0.41326169, abs=1e-8)
    assert cdpo_loss(t(2.0), 0.5, 0.0).item() == pytest.approx(SOFTPLUS_M1, abs=1e-8)


def test_robust() -> None:
    # (0.9 * 0.31326169 − 0.1 * 1.31326169) / 0.8 = 0.15060935 / 0.8
    assert robust_loss(t(2.0), 0.5, 0.1).item() == pytest.approx(0.18826169, abs=1e-8)


def test_hinge() -> None:
    assert hinge_loss(t(2.0), 0.25).item() == pytest.approx(0.5)   # 1 − 0.5
    assert hinge_loss(t(2.0), 1.0).item() == 0.0                     # margin beyond 1: no loss
    assert hinge_loss(t(-1.0), 1.0).item() == pytest.approx(2.0)


def test_ipo() -> None:
    # (h − 1/(2·0.5))² = (h − 1)²
    assert ipo_loss(t(2.0), 0.5).item() == pytest.approx(1.0)
    assert ipo_loss(t(1.0), 0.5).item() == pytest.approx(0.0)
    assert ipo_loss(t(0.0), 0.1).item() == pytest.approx(25.0)      # (0 − 5)²


def test_dispatch_and_batch_shape() -> None:
    h = t(2.0, 0.0, -2.0)
    out = preference_loss("sigmoid", h, 0.5)
    assert out.shape == (3,)
    assert out.tolist() == pytest.approx([SOFTPLUS_M1, 0.69314718, SOFTPLUS_P1], abs=1e-8)
    with pytest.raises(ValueError):
        preference_loss("nope", h, 0.5)


def test_chosen_nll_pools_tokens() -> None:
    # sums −4 over 2 tokens and −6 over 3 tokens: 10 / 5
    assert chosen_nll(t(-4.0, -6.0), t(2.0, 3.0)).item() == pytest.approx(2.0)


def test_sigmoid_gradient_direction() -> None:
    """The gradient pushes the chosen log-prob up and the rejected one down."""
    pw, pl = t(-2.0).requires_grad_(), t(-5.0).requires_grad_()
    sigmoid_loss(logratio_margin(pw, pl, t(-3.0), t(-4.0)), 0.5).sum().backward()
    assert pw.grad.item() < 0 < pl.grad.item()
    # d/dpw of −log σ(β h) = −β (1 − σ(β h)) = −0.5 · (1 − σ(1)) = −0.5 · 0.26894142
    assert pw.grad.item() == pytest.approx(-0.13447071, abs=1e-8)
