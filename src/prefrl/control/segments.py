"""Segments: cutting rollouts into short clips and keeping a rolling pool of candidates.

Christiano et al. 2017 (§2.2.1, App. A) show the teacher pairs of 1–2 second clips. The
loop cuts every rollout into non-overlapping windows of ``segment_steps`` env steps that
lie inside one episode, keeps the most recent ones in memory (``SegmentPool``), and only
saves a segment to the store when it enters a query — storing every segment would grow
the database by the full replay of the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefrl.data.types import Segment

#: Env time shown per clip when the env has a ``dt`` (seconds).
DEFAULT_SEGMENT_SECONDS = 1.5
#: Segment length for envs without ``dt`` (Atari, toy envs).
DEFAULT_SEGMENT_STEPS = 25
#: Bounds for envs with a physical time step (MuJoCo-like).
MIN_SEGMENT_STEPS, MAX_SEGMENT_STEPS = 25, 60


def resolve_segment_steps(env_dt: float | None, seconds: float = DEFAULT_SEGMENT_SECONDS) -> int:
    """Steps per segment: round(seconds / dt) clamped to [25, 60] when the env has ``dt``, else 25.

    HalfCheetah-v5 (dt = 0.05 s) → 30 steps; Hopper-v5 (dt = 0.008 s) → 188 → clamped to 60.
    """
    if seconds <= 0:
        raise ValueError(f"segment_seconds must be > 0, got {seconds}")
    if env_dt is None:
        return DEFAULT_SEGMENT_STEPS
    if not np.isfinite(env_dt) or env_dt <= 0:
        raise ValueError(f"env dt must be a positive number, got {env_dt}")
    return int(np.clip(round(seconds / env_dt), MIN_SEGMENT_STEPS, MAX_SEGMENT_STEPS))


def _field(rollout: Any, name: str) -> np.ndarray | None:
    value = getattr(rollout, name, None)
    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def episode_ids_from_dones(dones: np.ndarray, first_episode: np.ndarray | None = None) -> np.ndarray:
    """(T, N) episode ids when only ``dones`` is known: ``dones[t, n]`` ends the episode at step t."""
    t_len, n_envs = dones.shape
    ids = np.zeros((t_len, n_envs), dtype=np.int64)
    current = np.zeros(n_envs, dtype=np.int64) if first_episode is None else first_episode.astype(np.int64)
    for t in range(t_len):
        ids[t] = current
        current = current + dones[t].astype(np.int64)
    return ids


def cut_segments(
    rollout: Any,
    segment_steps: int,
    *,
    env_id: str = "",
    policy_version: int = 0,
    rng: np.random.Generator | None = None,
    member_rewards: np.ndarray | None = None,
    reward_round: int = -1,
) -> list[Segment]:
    """Cut a rollout into non-overlapping segments that never cross an episode boundary.

    Args:
        rollout: has ``obs`` (T, N, *obs_shape), ``actions`` (T, N, *act_shape),
            ``true_rewards`` (T, N), ``dones`` (T, N) and optionally ``sim_states``
            (T, N, D), ``episode_ids`` (T, N) and ``steps`` (T, N, index within the episode).
        segment_steps: k, the length of every segment.
        rng: when given, each env column starts at a random offset in [0, k) so that
            successive rollouts do not always cut at the same phase of the gait.
        member_rewards: (M, T, N) raw per-step rewards of the reward-model members for the
            rollout; each segment keeps its (M, k) slice (``Segment.member_rewards``), stamped
            with ``reward_round``, the reward rounds the model that scored them had seen.

    Returns:
        Segments with obs (k, *obs_shape), actions (k, *act_shape), true_rewards (k,),
        sim_states (k, D) or None.
    """
    if segment_steps < 1:
        raise ValueError(f"segment_steps must be ≥ 1, got {segment_steps}")
    obs = _field(rollout, "obs")
    actions = _field(rollout, "actions")
    true_rewards = _field(rollout, "true_rewards")
    dones = _field(rollout, "dones")
    if obs is None or actions is None or dones is None:
        raise ValueError("rollout must have obs, actions and dones")
    t_len, n_envs = dones.shape[:2]
    if obs.shape[:2] != (t_len, n_envs) or actions.shape[:2] != (t_len, n_envs):
        raise ValueError(f"rollout obs {obs.shape[:2]} / actions {actions.shape[:2]} do not match dones {dones.shape}")
    sim_states = _field(rollout, "sim_states")
    episode_ids = _field(rollout, "episode_ids")
    if episode_ids is None:
        episode_ids = episode_ids_from_dones(dones)
    step_indices = _field(rollout, "steps")
    if member_rewards is not None and member_rewards.shape[1:3] != (t_len, n_envs):
        raise ValueError(f"member_rewards {member_rewards.shape} must be (M, T, N) with (T, N) = {(t_len, n_envs)}")

    segments: list[Segment] = []
    for n in range(n_envs):
        start = int(rng.integers(0, segment_steps)) if rng is not None and t_len >= 2 * segment_steps else 0
        t = start
        while t + segment_steps <= t_len:
            window = slice(t, t + segment_steps)
            # A segment lies inside one episode: its last step may end it, no earlier one may.
            if np.all(episode_ids[window, n] == episode_ids[t, n]) and not np.any(dones[t : t + segment_steps - 1, n]):
                segments.append(
                    Segment(
                        obs=obs[window, n].copy(),
                        actions=actions[window, n].copy(),
                        true_rewards=None if true_rewards is None else true_rewards[window, n].astype(np.float64),
                        sim_states=None if sim_states is None else sim_states[window, n].copy(),
                        env_id=env_id,
                        policy_version=policy_version,
                        episode=int(episode_ids[t, n]),
                        start_step=int(step_indices[t, n]) if step_indices is not None else t,
                        member_rewards=None if member_rewards is None else member_rewards[:, window, n].copy(),
                        member_rewards_round=reward_round,
                    )
                )
                t += segment_steps
            else:
                t += 1
    return segments


class SegmentPool:
    """The most recent ``capacity`` segments, in memory; candidates for queries are drawn here.

    A segment is saved to the store only when a query uses it (``Segment.id`` is then set,
    so a segment shown twice is stored once).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"pool capacity must be ≥ 2, got {capacity}")
        self.capacity = capacity
        self._segments: deque[Segment] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._segments)

    def extend(self, segments: Sequence[Segment]) -> None:
        self._segments.extend(segments)

    def segments(self) -> list[Segment]:
        return list(self._segments)

    def candidate_pairs(self, n_pairs: int, rng: np.random.Generator) -> list[tuple[Segment, Segment]]:
        """``n_pairs`` random pairs of distinct segments (uniform over the pool)."""
        size = len(self._segments)
        if size < 2:
            raise ValueError(f"need at least 2 segments in the pool to form pairs, have {size}")
        left = rng.integers(0, size, n_pairs)
        offset = rng.integers(1, size, n_pairs)  # right ≠ left
        right = (left + offset) % size
        pool = self._segments
        return [(pool[int(i)], pool[int(j)]) for i, j in zip(left, right)]

    def state(self) -> list[Segment]:
        """What a checkpoint stores (segments are plain dataclasses of arrays)."""
        return list(self._segments)

    def load_state(self, segments: Sequence[Segment]) -> None:
        self._segments = deque(segments, maxlen=self.capacity)
