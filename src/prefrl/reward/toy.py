"""A toy preference problem with a known reward: r(o, a) = w·[o, a] over random features.

Shared by the must-show reward test and ``prefrl demo reward``: segments of random
Gaussian observations and actions, whose hidden per-step reward is linear in them, so a
learned reward can be checked against the truth on fresh segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefrl.data.types import Segment

__all__ = ["LinearRewardToy"]


@dataclass
class LinearRewardToy:
    """Segments with hidden reward r_t = w·[o_t, a_t], w ~ N(0, I) drawn from ``seed``."""

    obs_dim: int = 8
    """Observation dimension."""
    act_dim: int = 2
    """Continuous action dimension."""
    segment_length: int = 25
    """Steps per segment."""
    seed: int = 0
    """Seeds the hidden weights w."""
    w: np.ndarray = field(init=False, repr=False)
    """(obs_dim + act_dim,) hidden reward weights."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "act_dim", "segment_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        self.w = np.random.default_rng(self.seed).standard_normal(self.obs_dim + self.act_dim)

    def true_rewards(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """r = w·[o, a] for (…, obs_dim) and (…, act_dim) arrays → (…)."""
        return np.concatenate([obs, actions], axis=-1) @ self.w

    def segments(self, n: int, rng: np.random.Generator) -> list[Segment]:
        """n fresh segments of i.i.d. N(0, 1) observations and actions with their true rewards."""
        obs = rng.standard_normal((n, self.segment_length, self.obs_dim)).astype(np.float32)
        actions = rng.standard_normal((n, self.segment_length, self.act_dim)).astype(np.float32)
        rewards = self.true_rewards(obs.astype(np.float64), actions.astype(np.float64))  # (n, T)
        return [
            Segment(obs=obs[i], actions=actions[i], true_rewards=rewards[i], env_id="toy-linear", episode=i)
            for i in range(n)
        ]

    def pairs(self, n: int, rng: np.random.Generator) -> list[tuple[Segment, Segment]]:
        """n pairs of fresh segments."""
        segs = self.segments(2 * n, rng)
        return list(zip(segs[0::2], segs[1::2]))
