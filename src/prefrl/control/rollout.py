"""What one optimiser hands the preference loop after collecting: a :class:`Rollout`.

Its own module so that the envs, our PPO agent and the SB3 adapter all import it from here
and none of them imports another (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Rollout", "RunningMeanStd"]


@dataclass
class Rollout:
    """T vector steps of N envs, time-major.

    Public arrays (numpy):
        obs: (T, N, *obs_shape) raw observations o_t as returned by the env (not normalised).
        actions: (T, N, *act_shape) actions sent to the env (clipped to the bounds for Box).
        true_rewards: (T, N) env rewards r_t (hidden from the reward model).
        dones: (T, N) bool, the episode ended at step t (terminated or truncated).
        terminated / truncated: (T, N) bool, the two kinds of ``dones``.
        episode_ids: (T, N) int64, globally unique id of the episode step t belongs to.
        steps: (T, N) int64, index of step t within its episode (0 at the first step).
        sim_states: (T, N, D) simulator state of o_t, or None when the env has none.
        episode_returns / episode_lengths: (E,) true returns and lengths of the episodes
            that ended during this rollout.
        global_step: the agent's env-step counter after this rollout.

    For the PPO update (torch, private to the agent and :func:`ppo_update`):
        policy_obs: (T, N, …) the policy's inputs (normalised vector obs, raw uint8 frames).
        policy_actions: (T, N, …) the actions as sampled (unclipped for Box).
        logprobs, values: (T, N) log π_old(a_t|o_t), V_old(o_t).
        final_values: (T, N) V(o_final) at truncated steps (0 elsewhere) for the bootstrap.
        last_values: (N,) V(o_T) of the observation after the last step.

    Scored where it was collected (the actor process, ``actors=1``; else None and the loop scores it):
        member_rewards: (M, T, N) every reward member's raw r̂ of every step.
        member_norm: the scoring ensemble's (offset, scale), (M,) each: normalised = (raw − offset) · scale.
        reward_round: the reward rounds that ensemble had finished.
    """

    obs: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray
    dones: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_ids: np.ndarray
    steps: np.ndarray
    sim_states: np.ndarray | None
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    global_step: int
    policy_obs: torch.Tensor | None = None
    policy_actions: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    final_values: torch.Tensor | None = None
    last_values: torch.Tensor | None = None
    member_rewards: np.ndarray | None = None
    member_norm: tuple[np.ndarray, np.ndarray] | None = None
    reward_round: int | None = None

    @property
    def n_steps(self) -> int:
        return int(self.true_rewards.shape[0])

    @property
    def n_envs(self) -> int:
        return int(self.true_rewards.shape[1])


class RunningMeanStd:
    """Running mean and variance over batches (Chan et al. parallel update), float64."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def update(self, x: np.ndarray) -> None:
        """Fold in a batch x of shape (B, *shape)."""
        # Called once per env step: plain ufuncs (``np.add.reduce``), not the slower ``mean``/``var`` methods.
        batch_count = x.shape[0]
        batch_mean = np.add.reduce(x, axis=0) / batch_count
        centred = x - batch_mean
        batch_var = np.add.reduce(centred * centred, axis=0) / batch_count
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta * delta * (self.count * batch_count / total)
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = np.array(state["mean"], np.float64)
        self.var = np.array(state["var"], np.float64)
        self.count = float(state["count"])
