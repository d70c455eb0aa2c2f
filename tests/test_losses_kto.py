"""Tier 1: KTO's loss and reference point against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from prefrl.losses import kto_loss, kto_reference_point

D = torch.float64


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_kto_loss_by_hand():
    policy, ref = torch.tensor([-1.0, -2.0], dtype=D), torch.tensor([-1.5, -1.0], dtype=D)  # r = 0.5, −1
    desirable = torch.tensor([True, False])
    z = torch.tensor(0.2, dtype=D)
    losses = kto_loss(policy, ref, desirable, z, beta=0.5, desirable_weight=2.0, undesirable_weight=0.5)
    expected = [2.0 * (1 - sigmoid(0.5 * (0.5 - 0.2))), 0.5 * (1 - sigmoid(0.5 * (0.2 + 1.0)))]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=D))


def test_kto_reference_point_by_hand():
    z = kto_reference_point(torch.tensor([-1.0, -3.0], dtype=D), torch.tensor([-2.0, -2.5], dtype=D))
    assert z.item() == pytest.approx((1.0 - 0.5) / 2)
    assert not z.requires_grad
    # a negative KL estimate is clamped to 0
    assert kto_reference_point(torch.tensor([-3.0]), torch.tensor([-2.0])).item() == 0.0


def test_kto_loss_at_the_reference_is_half():
    zero = torch.zeros(3, dtype=D)
    losses = kto_loss(zero, zero, torch.tensor([True, False, True]), torch.tensor(0.0, dtype=D))
    torch.testing.assert_close(losses, torch.full((3,), 0.5, dtype=D))


def test_kto_loss_checks_its_inputs():
    with pytest.raises(ValueError, match="desirable"):
        kto_loss(torch.zeros(2), torch.zeros(2), torch.tensor([True]), torch.tensor(0.0))
    with pytest.raises(ValueError, match="beta"):
        kto_loss(torch.zeros(1), torch.zeros(1), torch.tensor([True]), torch.tensor(0.0), beta=0.0)
