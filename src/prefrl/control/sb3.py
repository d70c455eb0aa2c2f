"""Stable-Baselines3 as the policy optimiser (optional: ``pip install stable-baselines3``).

SB3 algorithms collect and learn inside ``learn()``, so the seam works differently from
:class:`~prefrl.control.optimizer.PPOAgent`: the learned reward enters *through the env*.
:class:`LearnedRewardVecEnv` replaces each step's reward by ``reward_fn(obs, actions)``
(keeping the env's reward in ``info["true_reward"]``) and records every transition, and
:meth:`SB3Optimizer.collect` runs ``algo.learn`` for the requested steps and hands back what
was recorded as a :class:`Rollout`. :meth:`SB3Optimizer.update` therefore has nothing left to
optimise; it returns SB3's counters so that the loop can call either optimiser the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from prefrl.control.envs import make_env
from prefrl.control.optimizer import Rollout

__all__ = ["LearnedRewardVecEnv", "SB3Optimizer", "RewardFn"]

#: (obs (N, …), actions (N, …)) → rewards (N,): the reward of taking ``actions`` in ``obs``.
RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LearnedRewardVecEnv(VecEnvWrapper):
    """Replaces the reward of an SB3 ``VecEnv`` by ``reward_fn(obs_t, a_t)`` and records transitions.

    ``obs_t`` is the observation the action was taken in (not the next one). With
    ``reward_fn=None`` the true reward passes through (the baseline). The true reward is in
    ``info["true_reward"]``. Transitions are buffered while ``recording`` is True and
    drained with :meth:`pop_rollout`.
    """

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None = None) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.recording = False
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self._sim_state: np.ndarray | None = None
        self._next_episode_id = 0
        self._episode_ids = np.zeros(self.num_envs, np.int64)
        self._ep_steps = np.zeros(self.num_envs, np.int64)
        self._ep_returns = np.zeros(self.num_envs, np.float64)
        self._clear()

    def _clear(self) -> None:
        self._buf: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "ids", "steps", "sim")
        }
        self._done_returns: list[float] = []
        self._done_lengths: list[int] = []

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        """Swap the reward (e.g. after the reward model was retrained)."""
        self.reward_fn = reward_fn

    def _reset_sim_state(self, idx: np.ndarray) -> None:
        reset_infos = getattr(self.venv, "reset_infos", None)
        if reset_infos is None or self._sim_state is None:
            return
        for i in idx:
            self._sim_state[i] = reset_infos[i]["sim_state"]

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._obs = np.asarray(obs)
        reset_infos = getattr(self.venv, "reset_infos", None)
        if reset_infos and all("sim_state" in info for info in reset_infos):
            self._sim_state = np.stack([np.asarray(info["sim_state"], np.float64) for info in reset_infos])
        self._episode_ids = np.arange(self._next_episode_id, self._next_episode_id + self.num_envs)
        self._next_episode_id += self.num_envs
        self._ep_steps[:] = 0
        self._ep_returns[:] = 0.0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, true_rewards, dones, infos = self.venv.step_wait()
        if self.reward_fn is None:
            rewards = np.asarray(true_rewards, np.float32)
        else:
            rewards = np.asarray(self.reward_fn(self._obs, self._actions), np.float32).reshape(self.num_envs)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        terminated = np.asarray(dones, bool) & ~truncated
        for i, info in enumerate(infos):
            info["true_reward"] = float(true_rewards[i])
        if self.recording:
            b = self._buf
            b["obs"].append(self._obs.copy())
            b["actions"].append(self._actions.copy())
            b["rewards"].append(np.asarray(true_rewards, np.float32))
            b["terminated"].append(terminated)
            b["truncated"].append(truncated)
            b["ids"].append(self._episode_ids.copy())
            b["steps"].append(self._ep_steps.copy())
            if self._sim_state is not None:
                b["sim"].append(self._sim_state.copy())
        self._ep_returns += true_rewards
        self._ep_steps += 1
        if self._sim_state is not None:
            for i, info in enumerate(infos):
                if "sim_state" in info:
                    self._sim_state[i] = info["sim_state"]
        done_idx = np.nonzero(dones)[0]
        if done_idx.size:
            if self.recording:
                self._done_returns.extend(self._ep_returns[done_idx].tolist())
                self._done_lengths.extend(self._ep_steps[done_idx].tolist())
            self._ep_returns[done_idx] = 0.0
            self._ep_steps[done_idx] = 0
            self._episode_ids[done_idx] = np.arange(self._next_episode_id, self._next_episode_id + done_idx.size)
            self._next_episode_id += done_idx.size
            self._reset_sim_state(done_idx)
        self._obs = np.asarray(obs)
        return obs, rewards, dones, infos

    def pop_rollout(self, global_step: int) -> Rollout:
        """The transitions recorded since the last call, time-major (T, N, …), without policy data."""
        b = self._buf
        if not b["obs"]:
            raise ValueError("no transitions were recorded")
        terminated, truncated = np.stack(b["terminated"]), np.stack(b["truncated"])
        rollout = Rollout(
            obs=np.stack(b["obs"]),
            actions=np.stack(b["actions"]),
            true_rewards=np.stack(b["rewards"]),
            dones=terminated | truncated,
            terminated=terminated,
            truncated=truncated,
            episode_ids=np.stack(b["ids"]),
            steps=np.stack(b["steps"]),
            sim_states=np.stack(b["sim"]) if b["sim"] else None,
            episode_returns=np.asarray(self._done_returns, np.float64),
            episode_lengths=np.asarray(self._done_lengths, np.int64),
            global_step=global_step,
        )
        self._clear()
        return rollout


class SB3Optimizer:
    """Any SB3 algorithm as the policy optimiser of the preference loop.

    Args:
        env_id: gymnasium id, built with :func:`~prefrl.control.envs.make_env` (``env_kwargs``).
        algo: an SB3 algorithm class (``PPO``, ``SAC``…) or its name in ``stable_baselines3``.
        reward_fn: the learned reward (obs, actions) → (N,); None trains on the true reward.
        n_envs: parallel envs (``DummyVecEnv``).
        seed: seeds the envs and the algorithm.
        policy: SB3 policy name.
        algo_kwargs: extra keyword arguments of the algorithm (``n_steps``, ``learning_rate``…).
        env_kwargs: keyword arguments of ``make_env`` (``fixed_horizon``, ``drop_ctrl_cost``…).
    """

    def __init__(
        self,
        env_id: str,
        algo: str | type[BaseAlgorithm] = "PPO",
        reward_fn: RewardFn | None = None,
        n_envs: int = 1,
        seed: int = 0,
        policy: str = "MlpPolicy",
        algo_kwargs: dict[str, Any] | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(algo, str):
            import stable_baselines3

            if not hasattr(stable_baselines3, algo):
                raise ValueError(f"unknown SB3 algorithm {algo!r}")
            algo = getattr(stable_baselines3, algo)
        env_kwargs = dict(env_kwargs or {})
        make_env(env_id, None, **env_kwargs).close()  # fail here on bad ids / spaces / kwargs
        fns = [lambda i=i: make_env(env_id, seed + i, **env_kwargs) for i in range(n_envs)]
        self.env_id = env_id
        self.venv = LearnedRewardVecEnv(DummyVecEnv(fns), reward_fn)
        self.venv.seed(seed)
        self.algo: BaseAlgorithm = algo(policy, self.venv, seed=seed, verbose=0, **(algo_kwargs or {}))

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        """Swap the learned reward used from the next :meth:`collect` on."""
        self.venv.set_reward_fn(reward_fn)

    @property
    def global_step(self) -> int:
        return int(self.algo.num_timesteps)

    def collect(self, n_steps: int) -> Rollout:
        """Learn for ≥ ``n_steps`` vector steps on the current reward; return the transitions seen.

        On-policy algorithms collect whole rollouts, so T may exceed ``n_steps``.
        """
        if not isinstance(n_steps, int) or n_steps <= 0:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        self.venv.recording = True
        try:
            self.algo.learn(total_timesteps=n_steps * self.venv.num_envs, reset_num_timesteps=False)
        finally:
            self.venv.recording = False
        return self.venv.pop_rollout(self.global_step)

    def update(self, rollout: Rollout, rewards: np.ndarray | None = None) -> dict[str, float]:
        """SB3 already learned during :meth:`collect` (on ``reward_fn``); returns its counters."""
        metrics = {"charts/global_step": float(self.global_step)}
        n_updates = getattr(self.algo, "_n_updates", None)
        if n_updates is not None:
            metrics["charts/updates"] = float(n_updates)
        return metrics

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations."""
        action, _ = self.algo.predict(obs, deterministic=deterministic)
        return action

    def evaluate(self, env_id: str | None = None, n_episodes: int = 10, seed: int = 0) -> list[float]:
        """True returns of the deterministic policy, one episode per env seed ``seed + i``."""
        returns = []
        for i in range(n_episodes):
            env: gym.Env = make_env(env_id or self.env_id, None, record_sim_state=False)
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(self.act(obs[None])[0])
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            env.close()
        return returns
