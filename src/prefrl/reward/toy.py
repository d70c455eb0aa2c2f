"""A toy preference problem with a known reward: r(o, a) = w·[o, a] over random features.

Shared by the must-show reward test and ``prefrl demo reward``: segments of random
Gaussian observations and actions, whose hidden per-step reward is linear in them, so a
learned reward can be checked against the truth on fresh segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from prefrl.data.types import Segment
from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.trainer import RewardTrainer, RewardTrainerConfig
from prefrl.teachers.synthetic import make_teacher

__all__ = ["LinearRewardToy", "ToyResult", "fresh_rank_correlation", "learn_toy_reward"]


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


@dataclass
class ToyResult:
    """What :func:`learn_toy_reward` returns."""

    metrics: dict[str, float]
    """The trainer's metrics of the round (``reward/*``)."""
    fresh_rank_correlation: float
    """Spearman correlation of predicted and true returns on fresh segments never trained on."""
    ensemble: RewardEnsemble
    """The trained reward ensemble."""
    n_labels: int
    """Comparisons the teacher answered (incomparable ones excluded)."""


def fresh_rank_correlation(
    toy: LinearRewardToy, ensemble: RewardEnsemble, n_segments: int, rng: np.random.Generator
) -> float:
    """Spearman correlation between predicted and true returns of ``n_segments`` fresh segments."""
    fresh = toy.segments(n_segments, rng)
    obs = np.stack([s.obs for s in fresh])  # (B, T, obs_dim)
    act = np.stack([s.actions for s in fresh])  # (B, T, act_dim)
    predicted = ensemble.predict(obs, act).sum(axis=-1)  # (B,)
    true = np.array([s.true_return for s in fresh])
    return float(spearmanr(predicted, true).statistic)


def learn_toy_reward(
    n_comparisons: int = 500,
    teacher: str = "rational",
    seed: int = 0,
    cfg: RewardTrainerConfig | None = None,
    teacher_kwargs: dict[str, Any] | None = None,
    n_fresh: int = 1000,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> ToyResult:
    """Learn the toy reward from ``n_comparisons`` synthetic labels and score it on fresh segments.

    One round of :class:`RewardTrainer` on a default :class:`RewardEnsemble` (3 members,
    2×64); everything is seeded from ``seed``.
    """
    if n_comparisons < 2:
        raise ValueError(f"n_comparisons must be ≥ 2, got {n_comparisons}")
    toy = LinearRewardToy(seed=seed)
    rng = np.random.default_rng(seed)
    pairs = toy.pairs(n_comparisons, rng)
    answers = make_teacher(teacher, rng, **(teacher_kwargs or {})).answer(pairs)
    labelled = [(left, right, mu) for (left, right), mu in zip(pairs, answers) if mu is not None]
    if not labelled:
        raise ValueError(f"the {teacher} teacher skipped every comparison")
    ensemble = RewardEnsemble((toy.obs_dim,), (toy.act_dim,), seed=seed)
    trainer = RewardTrainer(ensemble, cfg or RewardTrainerConfig(seed=seed), rng)
    metrics = trainer.train(labelled, progress=progress)
    rho = fresh_rank_correlation(toy, ensemble, n_fresh, np.random.default_rng(seed + 1))
    return ToyResult(metrics=metrics, fresh_rank_correlation=rho, ensemble=ensemble, n_labels=len(labelled))
