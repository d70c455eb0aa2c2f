"""k-NN state entropy against the closed form of a Gaussian, and PEBBLE's intrinsic reward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prefrl.rl.replay import ReplayBuffer
from prefrl.rl.state_entropy import StateEntropyReward, knn_distances, knn_entropy


def test_knn_distances_by_hand() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert knn_distances(x, 1).tolist() == [1.0, 1.0, 2.0]
    assert knn_distances(x, 2).tolist() == [3.0, 2.0, 3.0]
    assert knn_distances(torch.tensor([[0.5]]), 1, reference=x).tolist() == [0.5]
    with pytest.raises(ValueError, match="reference points"):
        knn_distances(x, 3)


@pytest.mark.parametrize(("d", "scale"), [(1, 1.0), (3, 0.5), (6, 2.0)])
def test_knn_entropy_matches_the_gaussian_closed_form(d: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(d)
    stds = scale * torch.linspace(0.5, 1.5, d)
    x = torch.randn(4000, d, generator=gen, dtype=torch.float64) * stds
    # H(N(0, Σ)) = ½·log((2πe)^d · det Σ)
    closed_form = 0.5 * d * math.log(2 * math.pi * math.e) + torch.log(stds).sum().item()
    assert knn_entropy(x, k=3) == pytest.approx(closed_form, abs=0.05 * d)
    # and it tells a narrower distribution from a wider one
    assert knn_entropy(x * 0.5, k=3) == pytest.approx(closed_form - d * math.log(2), abs=0.05 * d)


def test_intrinsic_reward_is_larger_for_states_away_from_the_buffer() -> None:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(500, (2,), (1,))
    states = rng.normal(size=(500, 2))
    buf.add(states, np.zeros((500, 1)), np.zeros(500), states, np.zeros(500))
    batch = buf.sample(4, rng)
    batch.next_obs = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [-6.0, 0.0]], dtype=torch.float32)
    reward = StateEntropyReward(buf, rng, k=5)(batch)
    assert reward.shape == (4,)
    assert min(reward[2], reward[3]) > 3 * max(reward[0], reward[1])
