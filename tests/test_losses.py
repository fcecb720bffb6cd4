"""Each preference loss against values worked out by hand.

Shared case: log π_θ(y_w) = −2, log π_θ(y_l) = −5, log π_ref(y_w) = −3, log π_ref(y_l) = −4, so
h = (−2 + 3) − (−5 + 4) = 1 − (−1) = 2. With β = 0.5: β·h = 1, and
−log σ(1) = log(1 + e^−1) = 0.31326169, −log σ(−1) = log(1 + e) = 1.31326169.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (cdpo_loss, chosen_nll, hinge_loss, ipo_loss, kto_loss, kto_reference_point, log1mexp,
                            logratio_margin, odds_ratio_loss, preference_loss, robust_loss, sigmoid_loss, simpo_loss)

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


def test_simpo_by_hand() -> None:
    # mean log-probs −1 (chosen) and −2 (rejected), β = 2, γ = 1: 2·(−1 + 2) − 1 = 1, so −log σ(1)
    assert simpo_loss(t(-1.0), t(-2.0), 2.0, 1.0).item() == pytest.approx(SOFTPLUS_M1, abs=1e-8)
    # a margin short of γ/β costs more than ln 2
    assert simpo_loss(t(-1.0), t(-1.2), 2.0, 1.0).item() == pytest.approx(1.03748795, abs=1e-8)  # −log σ(−0.6) = ln(1 + e^0.6)


def test_odds_ratio_by_hand() -> None:
    # P(y_w) = 0.5: odds 1, log odds 0; P(y_l) = 0.2: odds 0.25, log odds −ln 4. −log σ(ln 4) = ln(1 + 1/4)
    w, l = t(math.log(0.5)), t(math.log(0.2))
    assert odds_ratio_loss(w, l).item() == pytest.approx(math.log(1.25), abs=1e-8)
    assert log1mexp(t(math.log(0.2), math.log(0.9))).tolist() == pytest.approx([math.log(0.8), math.log(0.1)])


def test_kto_by_hand() -> None:
    # β = 0.5, z₀ = 1: desirable r = 3 → 1 − σ(0.5·2) = 1 − σ(1); undesirable r = −1 → λ_U·(1 − σ(0.5·(1 + 1)))
    one_minus_sig1 = 1 - 0.73105858
    out = kto_loss(t(3.0, -1.0), torch.tensor([True, False]), t(1.0), 0.5, desirable_weight=1.0,
                   undesirable_weight=2.0)
    assert out.tolist() == pytest.approx([one_minus_sig1, 2 * one_minus_sig1], abs=1e-8)
    # z₀: mean of the mismatched log-ratios, never below 0, no gradient
    kl = t(0.5, -1.5).requires_grad_()
    assert kto_reference_point(kl).item() == 0.0 and not kto_reference_point(kl).requires_grad
    assert kto_reference_point(t(1.0, 2.0)).item() == pytest.approx(1.5)


def test_the_config_offers_every_declared_loss_type() -> None:
    """trainer.config cannot import torch (``--help`` stays instant), so its choices are a list: kept equal here."""
    from trainer import config, losses

    assert config.LOSS_TYPES == tuple(losses.LOSS_TYPES)


def test_ipo_margin_is_per_token_in_dpo_loss() -> None:
    """IPO's declared per-token margin: log π_θ(y_w) = −4 over 2 tokens, log π_θ(y_l) = −9 over 3, both references
    −6: h = (−4 + 6)/2 − (−9 + 6)/3 = 2, so (2 − 1/(2·0.5))² = 1 (the summed margin 5 would give 16)."""
    from trainer.config import TrainConfig
    from trainer.dpo import dpo_loss

    cfg = TrainConfig(loss_type="ipo", beta=0.5, rpo_alpha=0.0)
    loss, _ = dpo_loss(cfg, t(-4.0, -9.0), t(2.0, 3.0), t(-6.0, -6.0))
    assert loss.item() == pytest.approx(1.0)
