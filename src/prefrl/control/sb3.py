"""Stable-Baselines3 as the policy optimiser (optional: ``pip install stable-baselines3``).

:class:`SB3Optimizer` puts any SB3 algorithm behind the same seam as our PPO agent:
``collect(n_steps)`` runs the SB3 policy for T vector steps with SB3's own collection code
(``collect_rollouts``: its action noise, clipping, timeout bootstrap), filling SB3's rollout or
replay buffer *with a zero reward*, and returns the transitions as a :class:`Rollout`;
``update(rollout, rewards)`` writes the learned rewards (T, N) into the slots those steps took
and runs SB3's ``train()`` — on-policy (PPO, A2C): returns and advantages recomputed, one
update; off-policy (SAC, TD3, DDPG): ``gradient_steps`` per collected step once past
``learning_starts``. So the loop trains SB3 on the learned reward exactly as it trains our PPO.

:class:`LearnedRewardVecEnv` is the SB3 ``VecEnv`` wrapper that records transitions and replaces
the env reward (by ``reward_fn(obs, actions)``, or by zero while the optimiser collects).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from prefrl.control.envs import make_env
from prefrl.control.rollout import Rollout

__all__ = ["LearnedRewardVecEnv", "SB3Optimizer", "RewardFn", "sb3_algorithm", "zero_reward"]

#: (obs (N, …), actions (N, …)) → rewards (N,): the reward of taking ``actions`` in ``obs``.
RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: ``--optimizer`` name → SB3 class name.
SB3_ALGORITHMS = {"sb3-ppo": "PPO", "sb3-a2c": "A2C", "sb3-sac": "SAC", "sb3-td3": "TD3", "sb3-ddpg": "DDPG"}


def zero_reward(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """What SB3's buffers get while collecting; :meth:`SB3Optimizer.update` adds the learned reward."""
    return np.zeros(len(obs), np.float32)


def sb3_algorithm(name: str) -> type[BaseAlgorithm]:
    """The SB3 class for ``sb3-ppo`` / ``PPO`` …; ``ValueError`` for an unknown one."""
    import stable_baselines3

    algo = SB3_ALGORITHMS.get(name, name)
    if not isinstance(getattr(stable_baselines3, algo, None), type):
        raise ValueError(f"unknown SB3 algorithm {name!r}")
    return getattr(stable_baselines3, algo)


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
    """Any SB3 algorithm as the policy optimiser of the preference loop (``collect`` → ``update``).

    Args:
        env_id: gymnasium id, built with :func:`~prefrl.control.envs.make_env` (``env_kwargs``).
        algo: an SB3 algorithm class (``PPO``, ``SAC``…) or its name (``"SAC"``, ``"sb3-sac"``).
        reward_fn: rewards ``update`` uses when called without ``rewards`` (None: the true reward).
        n_envs: parallel envs (``DummyVecEnv``).
        seed: seeds the envs and the algorithm.
        policy: SB3 policy name.
        algo_kwargs: keyword arguments of the algorithm (``n_steps``, ``learning_rate``…).
        env_kwargs: keyword arguments of ``make_env`` (``fixed_horizon``, ``drop_ctrl_cost``…).
        total_steps: the run's env steps, for SB3's learning-rate schedules.
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
        total_steps: int = 1_000_000,
    ) -> None:
        algo_cls = sb3_algorithm(algo) if isinstance(algo, str) else algo
        self.env_kwargs = dict(env_kwargs or {})
        make_env(env_id, None, **self.env_kwargs).close()  # fail here on bad ids / spaces / kwargs
        fns = [lambda i=i: make_env(env_id, seed + i, **self.env_kwargs) for i in range(n_envs)]
        self.env_id = env_id
        self.reward_fn = reward_fn
        self.venv = LearnedRewardVecEnv(DummyVecEnv(fns), zero_reward)
        self.venv.seed(seed)
        self.envs = self.venv
        self.obs_space, self.action_space = self.venv.observation_space, self.venv.action_space
        self.algo: BaseAlgorithm = algo_cls(policy, self.venv, seed=seed, verbose=0, **(algo_kwargs or {}))
        self.on_policy = isinstance(self.algo, OnPolicyAlgorithm)
        if not self.on_policy and not isinstance(self.algo, OffPolicyAlgorithm):
            raise ValueError(f"{algo_cls.__name__} is neither an on-policy nor an off-policy SB3 algorithm")
        self.total_steps = int(total_steps)
        self._total, self._callback = self.algo._setup_learn(self.total_steps, None, True, "prefrl", False)
        self._callback.on_training_start(locals(), globals())
        self._slots: np.ndarray | None = None  # replay-buffer rows of the last collect (off-policy)
        self._last_values: torch.Tensor | None = None  # V(o_T) of the last collect (on-policy)

    @classmethod
    def from_control_config(cls, cfg: Any, algo: type[BaseAlgorithm], n_envs: int, seed: int) -> SB3Optimizer:
        """The SB3 algorithm with the ``ControlConfig``'s rollout length and the PPO knobs SB3 shares."""
        ppo = cfg.ppo
        kwargs: dict[str, Any] = {"gamma": ppo.gamma, "learning_rate": ppo.learning_rate}
        if issubclass(algo, OnPolicyAlgorithm):
            kwargs.update(n_steps=cfg.rollout_steps, gae_lambda=ppo.gae_lambda, ent_coef=ppo.ent_coef,
                          vf_coef=ppo.vf_coef, max_grad_norm=ppo.max_grad_norm)  # fmt: skip
            if algo.__name__ == "PPO":
                kwargs.update(batch_size=max(cfg.rollout_steps * n_envs // ppo.num_minibatches, 2), n_epochs=ppo.update_epochs,
                              clip_range=ppo.clip_coef, target_kl=ppo.target_kl, normalize_advantage=ppo.norm_adv)  # fmt: skip
        else:
            kwargs["buffer_size"] = min(1_000_000, cfg.steps)
        env_kwargs = {"fixed_horizon": cfg.fixed_horizon, "drop_ctrl_cost": cfg.drop_ctrl_cost}
        return cls(cfg.env_id, algo, n_envs=n_envs, seed=seed, algo_kwargs=kwargs, env_kwargs=env_kwargs,
                   total_steps=cfg.steps)  # fmt: skip

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        """The reward ``update`` uses when it is given none (None: the true reward)."""
        self.reward_fn = reward_fn

    @property
    def global_step(self) -> int:
        return int(self.algo.num_timesteps)

    def collect(self, n_steps: int) -> Rollout:
        """Run the SB3 policy for ``n_steps`` vector steps into SB3's buffer (zero reward); no learning.

        On-policy algorithms collect exactly their ``n_steps`` (pass the same number).
        """
        if not isinstance(n_steps, int) or n_steps <= 0:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        algo = self.algo
        self.venv.recording = True
        try:
            if self.on_policy:
                if n_steps != algo.n_steps:
                    raise ValueError(f"n_steps must be the algorithm's rollout length {algo.n_steps}, got {n_steps}")
                algo.collect_rollouts(algo.env, self._callback, algo.rollout_buffer, n_rollout_steps=n_steps)
                with torch.no_grad():
                    self._last_values = algo.policy.predict_values(obs_as_tensor(algo._last_obs, algo.device))
            else:
                start = algo.replay_buffer.pos
                algo.collect_rollouts(algo.env, self._callback, TrainFreq(n_steps, TrainFrequencyUnit.STEP),
                                      algo.replay_buffer, algo.action_noise, algo.learning_starts)  # fmt: skip
                self._slots = (start + np.arange(n_steps)) % algo.replay_buffer.buffer_size
        finally:
            self.venv.recording = False
        return self.venv.pop_rollout(self.global_step)

    def update(self, rollout: Rollout, rewards: np.ndarray | None = None) -> dict[str, float]:
        """Write ``rewards`` (T, N) into the steps :meth:`collect` just stored, then SB3's ``train()``.

        ``rewards=None``: ``reward_fn`` of the rollout's steps, or its true rewards without one.
        """
        if rewards is None:
            rewards = rollout.true_rewards if self.reward_fn is None else self._reward_of(rollout)
        r = np.asarray(rewards, np.float32)
        if r.shape != rollout.true_rewards.shape:
            raise ValueError(f"rewards must be (T, N) = {rollout.true_rewards.shape}, got {r.shape}")
        algo = self.algo
        algo._update_current_progress_remaining(algo.num_timesteps, self._total)
        if self.on_policy:
            if self._last_values is None:
                raise ValueError("update() needs a collect() first")
            buf = algo.rollout_buffer
            buf.rewards += r  # on top of SB3's γ·V(o_final) at truncations
            buf.compute_returns_and_advantage(last_values=self._last_values, dones=algo._last_episode_starts)
            algo.train()
            self._last_values = None
        else:
            if self._slots is None:
                raise ValueError("update() needs a collect() first")
            algo.replay_buffer.rewards[self._slots] = r
            self._slots = None
            if algo.num_timesteps > algo.learning_starts:
                steps = algo.gradient_steps * r.shape[0] if algo.gradient_steps >= 0 else r.size
                algo.train(gradient_steps=steps, batch_size=algo.batch_size)
        metrics = {f"sb3/{k.split('/', 1)[-1]}": float(v) for k, v in algo.logger.name_to_value.items() if k.startswith("train/")}
        metrics["charts/global_step"] = float(self.global_step)
        metrics["charts/updates"] = float(getattr(algo, "_n_updates", 0))
        return metrics

    def _reward_of(self, rollout: Rollout) -> np.ndarray:
        t_len, n_envs = rollout.true_rewards.shape
        obs = rollout.obs.reshape(t_len * n_envs, *rollout.obs.shape[2:])
        act = rollout.actions.reshape(t_len * n_envs, *rollout.actions.shape[2:])
        return np.asarray(self.reward_fn(obs, act), np.float32).reshape(t_len, n_envs)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations."""
        action, _ = self.algo.predict(obs, deterministic=deterministic)
        return action

    def evaluate(self, env_id: str | None = None, n_episodes: int = 10, seed: int = 0, **env_kwargs: Any) -> list[float]:
        """True returns of the deterministic policy, one episode per env seed ``seed + i``."""
        returns = []
        kwargs = {**self.env_kwargs, **env_kwargs, "record_sim_state": False}
        for i in range(n_episodes):
            env: gym.Env = make_env(env_id or self.env_id, None, **kwargs)
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(self.act(obs[None])[0])
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            env.close()
        return returns

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's networks and optimisers and its step counter (not its replay buffer)."""
        return {"parameters": self.algo.get_parameters(), "num_timesteps": int(self.algo.num_timesteps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.algo.set_parameters(state["parameters"], exact_match=True)
        self.algo.num_timesteps = int(state["num_timesteps"])
