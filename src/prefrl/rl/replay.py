"""A replay buffer of transitions whose rewards can be recomputed (PEBBLE's relabelling).

Lee et al. 2021 (PEBBLE, §4.2): the reward of an off-policy learner from preferences comes from a
reward model that keeps changing, so after each retraining every stored reward is recomputed from
the new model — otherwise the critic keeps regressing on the rewards of models long gone.
:meth:`ReplayBuffer.relabel` does that in batches over every stored transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ReplayBatch", "ReplayBuffer", "RewardFn"]

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""r̂(obs (B, *obs_shape), actions (B, *act_shape)) → rewards (B,), e.g. ``RewardEnsemble.predict``."""


@dataclass
class ReplayBatch:
    """A minibatch of B transitions as float32 tensors (``indices``: their rows in the buffer)."""

    obs: torch.Tensor  # (B, *obs_shape)
    actions: torch.Tensor  # (B, *act_shape)
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) 1.0 where the episode ended in a terminal state (no bootstrap)
    indices: np.ndarray  # (B,)


class ReplayBuffer:
    """Circular store of (s, a, r, s', terminated); rewards may be relabelled from a reward function.

    Args:
        capacity: transitions kept; once full, the oldest are overwritten.
        obs_shape: shape of one observation.
        act_shape: shape of one action.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], act_shape: tuple[int, ...]) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((capacity, *act_shape), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.full = False
        self.relabel_count = 0

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Append N transitions (every argument has a leading axis N, e.g. one row per env)."""
        obs = np.asarray(obs, dtype=np.float32)
        n = obs.shape[0]
        arrays = {
            "obs": obs,
            "actions": np.asarray(actions, dtype=np.float32).reshape(n, *self.actions.shape[1:]),
            "rewards": np.asarray(rewards, dtype=np.float32).reshape(n),
            "next_obs": np.asarray(next_obs, dtype=np.float32).reshape(obs.shape),
            "terminated": np.asarray(terminated, dtype=np.float32).reshape(n),
        }
        if obs.shape[1:] != self.obs.shape[1:]:
            raise ValueError(f"obs has shape {obs.shape[1:]} per row, the buffer {self.obs.shape[1:]}")
        idx = (self.pos + np.arange(n)) % self.capacity
        for name, value in arrays.items():
            getattr(self, name)[idx] = value
        self.full = self.full or self.pos + n >= self.capacity
        self.pos = int((self.pos + n) % self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu") -> ReplayBatch:
        """B transitions drawn uniformly with replacement."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, len(self), size=batch_size)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x[idx], device=device)

        return ReplayBatch(t(self.obs), t(self.actions), t(self.rewards), t(self.next_obs), t(self.terminated), idx)

    def relabel(self, reward_fn: RewardFn, batch_size: int = 10_000) -> None:
        """Recompute every stored reward as ``reward_fn(obs, actions)``, ``batch_size`` rows at a time."""
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            rewards = np.asarray(reward_fn(self.obs[start:stop], self.actions[start:stop]), dtype=np.float32)
            if rewards.shape != (stop - start,):
                raise ValueError(f"reward_fn returned shape {rewards.shape}, expected ({stop - start},)")
            self.rewards[start:stop] = rewards
        self.relabel_count += 1

    def state_dict(self) -> dict[str, Any]:
        n = len(self)
        return {
            "capacity": self.capacity, "pos": self.pos, "full": self.full, "relabel_count": self.relabel_count,
            **{name: getattr(self, name)[:n].copy() for name in ("obs", "actions", "rewards", "next_obs",
                                                               "terminated")},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {self.capacity} != saved {state['capacity']}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[: len(state[name])] = state[name]
        self.pos, self.full, self.relabel_count = int(state["pos"]), bool(state["full"]), int(state["relabel_count"])
