"""The report's reference curve: the same optimiser, env, steps and seed on the true env reward."""

from __future__ import annotations

from typing import Any

import numpy as np

from prefrl.control.config import ControlConfig
from prefrl.control.run_state import EpisodeTracker

__all__ = ["run_true_reward_ppo", "train_true_reward_ppo"]


def run_true_reward_ppo(
    cfg: ControlConfig, sink: Any = None, tag: str = "baseline/true_return"
) -> list[tuple[int, float]]:
    """(env step, true return) of every episode of the optimiser trained on the true reward."""
    return train_true_reward_ppo(cfg, sink, tag)[1]


def train_true_reward_ppo(
    cfg: ControlConfig, sink: Any = None, tag: str = "baseline/true_return"
) -> tuple[Any, list[tuple[int, float]]]:
    """:func:`run_true_reward_ppo` that also returns the trained optimiser (for evaluation); its envs are closed.

    ``sink``: a :class:`~prefrl.utils.metrics.MetricsSink` that gets ``tag`` per rollout.
    """
    from prefrl.control.optimizers import build_optimizer

    agent = build_optimizer(cfg)
    tracker = EpisodeTracker(cfg.n_envs)
    episodes: list[tuple[int, float]] = []
    step = 0
    try:
        while step + cfg.steps_per_rollout <= cfg.steps:
            rollout = agent.collect(cfg.rollout_steps)
            true_rewards, dones = np.asarray(rollout.true_rewards), np.asarray(rollout.dones)
            finished = tracker.update(true_rewards, dones, step)
            episodes.extend(finished)
            step += true_rewards.size
            agent.update(rollout, true_rewards.astype(np.float32))
            if sink is not None and finished:
                sink.scalar(tag, float(np.mean([r for _, r in finished])), step)
    finally:
        agent.envs.close()
    return agent, episodes
