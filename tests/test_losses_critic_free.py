"""Tier 1: the critic-free advantages and the loss aggregation against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from prefrl.losses import (
    aggregate_token_loss,
    batch_baseline_advantages,
    clipped_surrogate_loss,
    clipped_surrogate_token_loss,
    group_relative_advantages,
    leave_one_out_advantages,
)

D = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=D)


def test_group_relative_advantages_by_hand():
    # group 1: mean 2, unbiased std 1; group 2: all equal → exactly 0, no NaN
    adv = group_relative_advantages(t(1, 2, 3, 5, 5, 5), group_size=3)
    eps = 1e-4
    torch.testing.assert_close(adv, t(-1 / (1 + eps), 0, 1 / (1 + eps), 0, 0, 0))
    assert not torch.isnan(adv).any()
    # Dr. GRPO: no division by the std
    torch.testing.assert_close(group_relative_advantages(t(1, 2, 3, 5, 5, 5), 3, scale=False), t(-1, 0, 1, 0, 0, 0))
    # k = 1: no NaN from a one-element std
    torch.testing.assert_close(group_relative_advantages(t(4, 7), 1), t(0, 0))


def test_leave_one_out_advantages_by_hand():
    # baselines: (2+3+6)/3, (1+3+6)/3, (1+2+6)/3, (1+2+3)/3
    adv = leave_one_out_advantages(t(1, 2, 3, 6, 5, 5, 5, 5), group_size=4)
    torch.testing.assert_close(adv, t(1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="group_size ≥ 2"):
        leave_one_out_advantages(t(1, 2), 1)


def test_grouping_is_checked():
    with pytest.raises(ValueError, match="divide"):
        group_relative_advantages(t(1, 2, 3), 2)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        leave_one_out_advantages(torch.zeros(2, 2, dtype=D), 2)


def test_batch_baseline_advantages_by_hand():
    rewards = torch.tensor([[0.0, 1.0], [2.0, 9.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=D)  # the 9 is padding: ignored
    # returns-to-go [[1, 1], [2, ·]]; batch mean 4/3, biased var 2/9
    adv = batch_baseline_advantages(rewards, mask)
    sd = math.sqrt(2 / 9)
    expected = torch.tensor([[(1 - 4 / 3) / sd, (1 - 4 / 3) / sd], [(2 - 4 / 3) / sd, 0.0]], dtype=D)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=1e-6)
    # all equal returns: zero advantage, no NaN
    flat = batch_baseline_advantages(torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=D), torch.ones(2, 2, dtype=D))
    assert torch.equal(flat, torch.zeros(2, 2, dtype=D))


def test_clipped_surrogate_token_loss_by_hand():
    old = torch.zeros(3, dtype=D)
    new = t(math.log(1.5), math.log(1.5), math.log(0.5))
    loss_t = clipped_surrogate_token_loss(new, old, t(1, -1, 1), clip_coef=0.2)
    torch.testing.assert_close(loss_t, t(-1.2, 1.5, -0.5))
    # token-mean of the per-token loss is the PPO loss
    torch.testing.assert_close(loss_t.mean(), clipped_surrogate_loss(new, old, t(1, -1, 1), 0.2))


def test_aggregate_token_loss_by_hand():
    loss_t = torch.tensor([[1.0, 2.0, 3.0], [4.0, 7.0, 7.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=D)
    assert aggregate_token_loss(loss_t, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate_token_loss(loss_t, mask, "sequence-mean").item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert aggregate_token_loss(loss_t, mask, "constant", normaliser=5).item() == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError, match="normaliser"):
        aggregate_token_loss(loss_t, mask, "constant")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_token_loss(loss_t, mask, "sum")
