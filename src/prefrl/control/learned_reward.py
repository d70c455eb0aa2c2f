"""The loop's learned reward: the ensemble the policy reads, the copy the trainer fits, and their locks.

In synchronous runs both are one object. With ``asynchronous=True`` the trainer fits its own copy
in a background thread (holding ``train_lock`` for a whole round) and copies the weights over to
the policy's ensemble under ``lock`` when the round ends, so the policy never reads half a round.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np

from prefrl.control.gold_vs_proxy import proxy_vs_true, segment_return_scatter
from prefrl.control.rollout import Rollout

__all__ = ["LearnedReward", "score_members"]


def score_members(ensemble: Any, rollout: Rollout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every member's raw r̂ for every step of ``rollout`` in one batched call: (M, T, N), and the
    ensemble's normalisation (offset, scale) (M,) each, so that ``(raw − offset) · scale`` is what
    ``predict_members(normalised=True)`` gives. The trainer already normalised the ensemble (mean 0,
    std 1 per member) over recent labelled segments; re-normalising per rollout would erase progress."""
    obs, actions = np.asarray(rollout.obs), np.asarray(rollout.actions)
    t_len, n_envs = obs.shape[:2]
    flat_obs = obs.reshape(t_len * n_envs, *obs.shape[2:])  # (T·N, *obs_shape)
    flat_act = actions.reshape(t_len * n_envs, *actions.shape[2:])  # (T·N, *act_shape)
    raw = ensemble.predict_members(flat_obs, flat_act, normalised=False)  # (M, T·N)
    offset, scale = ensemble.norm_offset.cpu().numpy(), ensemble.norm_scale.cpu().numpy()
    return raw.reshape(raw.shape[0], t_len, n_envs), offset, scale


class LearnedReward:
    """Reward ensemble + trainer of one run, built from its ``ControlConfig`` and env spaces."""

    def __init__(self, cfg: Any, obs_space: Any, action_space: Any) -> None:
        from prefrl.reward.ensemble import RewardEnsemble
        from prefrl.reward.trainer import RewardTrainer

        self.ensemble = RewardEnsemble.for_spaces(obs_space, action_space, cfg.reward_members, cfg.reward_hidden, seed=cfg.seed)
        self.train_ensemble = copy.deepcopy(self.ensemble) if cfg.asynchronous else self.ensemble
        self.trainer = RewardTrainer(self.train_ensemble, cfg.reward, np.random.default_rng(cfg.seed + 1))
        self.lock = threading.Lock()  # guards the policy's ensemble
        self.train_lock = threading.Lock()  # held for a whole reward round (trainer + its ensemble)
        self.n_trained_pairs = -1
        self.score_reuse_rounds = int(cfg.score_reuse_rounds)

    def train(self, pairs: list[Any], counters: Any, extra: list[Any] | None = None) -> dict[str, float]:
        """One round on ``pairs`` (+ ``extra``, e.g. SURF's pseudo-labelled and cropped pairs); copies the
        weights to the policy's ensemble and counts the round."""
        with self.train_lock:
            metrics = self.trainer.train(list(pairs) + list(extra or []))
            self.n_trained_pairs = len(pairs)
            if self.train_ensemble is not self.ensemble:
                weights = copy.deepcopy(self.train_ensemble.state_dict())
                with self.lock:
                    self.ensemble.load_state_dict(weights)
            counters.reward_rounds += 1
        return {k: float(v) for k, v in metrics.items()}

    def predict(self, rollout: Rollout) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Every member's r̂ for every step of the rollout in one batched call, when it is collected.

        Returns the raw member rewards (M, T, N) (the segments keep their slices, which query
        selection sums: :attr:`~prefrl.data.types.Segment.member_rewards`), the policy's reward
        (T, N) (the mean of the normalised members) and its gold-vs-proxy metrics.
        """
        t_len, n_envs = rollout.true_rewards.shape
        if rollout.member_rewards is not None:  # scored where it was collected (the actor process: actors=1)
            raw = rollout.member_rewards.reshape(rollout.member_rewards.shape[0], t_len * n_envs)
            offset, scale = rollout.member_norm
        else:
            with self.lock:
                raw, offset, scale = score_members(self.ensemble, rollout)
            raw = raw.reshape(raw.shape[0], t_len * n_envs)
        members = (raw - offset[:, None]) * scale[:, None]  # normalised, as predict_members(normalised=True)
        rewards = np.asarray(members.mean(axis=0), dtype=np.float32).reshape(t_len, n_envs)
        metrics = proxy_vs_true(members, np.asarray(rollout.true_rewards).reshape(-1))
        return raw.reshape(raw.shape[0], t_len, n_envs), rewards, metrics

    def rewards(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """r̂(obs (B, …), actions (B, …)) → (B,): the policy's ensemble mean (what a replay buffer is relabelled with)."""
        with self.lock:
            return np.asarray(self.ensemble.predict_members(obs, actions).mean(axis=0), dtype=np.float32)

    def select(self, selector: Any, candidates: list[Any], n: int, reward_round: int | None = None) -> list[int]:
        """The selector's choice of ``n`` among ``candidates``, scored by the policy's ensemble.

        A candidate's cached collection-time scores (``Segment.member_rewards``) are reused while at most
        ``score_reuse_rounds`` reward rounds older than ``reward_round`` (the rounds so far), else dropped,
        so the selector scores it with the current networks. Stale scores can bias the choice, not only
        blur it: a less trained ensemble tends to disagree more, so old segments would look informative.
        """
        if reward_round is not None:
            for pair in candidates:
                for seg in pair:
                    if seg.member_rewards is not None and reward_round - seg.member_rewards_round > self.score_reuse_rounds:
                        seg.member_rewards = None
        with self.lock:
            return list(selector.select(candidates, n, self.ensemble))[:n]

    def segment_returns(self, segments: list[Any]) -> list[tuple[float, float]]:
        """(predicted, true) returns of recent segments, for the report."""
        with self.lock:
            return segment_return_scatter(self.ensemble, segments)
