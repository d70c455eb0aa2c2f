"""ReplayBuffer: circular storage, uniform sampling, and PEBBLE relabelling of every stored reward."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.rl.replay import ReplayBuffer


def filled(n: int, capacity: int) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, (2,), (1,))
    for i in range(n):
        buf.add(np.full((1, 2), i), np.full((1, 1), -i), np.array([i]), np.full((1, 2), i + 1), np.array([i % 2]))
    return buf


def test_buffer_wraps_and_keeps_the_newest_transitions() -> None:
    buf = filled(7, capacity=5)
    assert len(buf) == 5
    assert sorted(buf.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]
    batch = buf.sample(64, np.random.default_rng(0))
    assert batch.obs.shape == (64, 2) and batch.rewards.shape == (64,) and batch.terminated.shape == (64,)
    # each sampled row is one stored transition, fields aligned
    assert np.array_equal(batch.next_obs.numpy()[:, 0], batch.obs.numpy()[:, 0] + 1)
    assert np.array_equal(batch.rewards.numpy(), batch.obs.numpy()[:, 0])


def test_relabel_recomputes_every_stored_reward_in_batches() -> None:
    buf = filled(7, capacity=5)  # full and wrapped: rows 0..4 hold transitions 5, 6, 2, 3, 4
    calls = []

    def reward_fn(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        calls.append(len(obs))
        return 10 * obs[:, 0] + act[:, 0]

    buf.relabel(reward_fn, batch_size=2)
    assert calls == [2, 2, 1]
    assert np.array_equal(buf.rewards, 9 * buf.obs[:, 0])
    assert buf.relabel_count == 1
    with pytest.raises(ValueError, match="shape"):
        buf.relabel(lambda o, a: np.zeros((len(o), 1)))


def test_state_dict_round_trip() -> None:
    buf = filled(3, capacity=5)
    other = ReplayBuffer(5, (2,), (1,))
    other.load_state_dict(buf.state_dict())
    assert len(other) == 3 and np.array_equal(other.rewards[:3], buf.rewards[:3])
