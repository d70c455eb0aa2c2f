"""Our SAC as the loop's policy optimiser (``--optimizer sac``): PEBBLE's off-policy learner.

:class:`SACOptimizer` offers the seam of :mod:`prefrl.control.optimizers`: ``collect(n_steps)`` runs
the policy (uniformly random actions until ``learning_starts``) and stores every transition in a
:class:`~prefrl.rl.replay.ReplayBuffer` with a placeholder reward; ``update(rollout, rewards)`` writes
the learned rewards into those rows and takes ``updates_per_step`` SAC steps per env step. Two
things set it apart (Lee et al. 2021):

- :meth:`relabel` recomputes every stored reward from the reward model; the loop calls it after
  each reward round, so no minibatch ever mixes rewards of old models.
- :meth:`pretrain_update` is the unsupervised phase: the same update on the k-NN state-entropy
  reward (:class:`~prefrl.rl.state_entropy.StateEntropyReward`) instead of a learned one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prefrl.control.ppo_agent import evaluate_policy
from prefrl.control.rollout import Rollout
from prefrl.rl.replay import ReplayBuffer, RewardFn
from prefrl.rl.sac import SACAgent, SACConfig
from prefrl.rl.state_entropy import StateEntropyReward

__all__ = ["SACOptimizer"]


class SACOptimizer:
    """SAC on a SAME_STEP-autoreset gymnasium vector env with a Box action space.

    Args:
        envs: the vector env (N sub-envs), seeded when built; reset once here.
        cfg: SAC hyper-parameters.
        seed: seeds the networks, the policy noise, the random warm-up actions and the minibatches.
    """

    def __init__(self, envs: Any, cfg: SACConfig, seed: int = 0) -> None:
        self.envs, self.cfg = envs, cfg
        self.obs_space, self.action_space = envs.single_observation_space, envs.single_action_space
        if not hasattr(self.action_space, "low") or len(self.obs_space.shape) != 1:
            raise ValueError("optimizer 'sac' needs flat Box observations and a Box action space")
        self.n_envs = int(envs.num_envs)
        self.agent = SACAgent(int(self.obs_space.shape[0]), self.action_space.low, self.action_space.high, cfg, seed)
        self.buffer = ReplayBuffer(cfg.buffer_size, self.obs_space.shape, self.action_space.shape)
        self.rng, self.seed = np.random.default_rng(seed), seed
        self.pretrained = self.critic_reset = False
        self._entropy_reward: StateEntropyReward | None = None
        self.global_step = 0
        self._slots: np.ndarray | None = None
        self._slots_relabelled = False  # a relabel since collect() already wrote the current model's rewards there
        self._next_episode_id = 0
        obs, info = envs.reset()
        self._obs, self._sim_state = obs, info.get("sim_state")
        self._new_episodes(np.arange(self.n_envs))
        self._ep_steps = np.zeros(self.n_envs, np.int64)
        self._ep_returns = np.zeros(self.n_envs, np.float64)

    def _new_episodes(self, idx: np.ndarray) -> None:
        if not hasattr(self, "_episode_ids"):
            self._episode_ids = np.zeros(self.n_envs, np.int64)
        self._episode_ids[idx] = np.arange(self._next_episode_id, self._next_episode_id + idx.size)
        self._next_episode_id += idx.size

    def collect(self, n_steps: int) -> Rollout:
        """``n_steps`` vector steps into the replay buffer (reward 0 until :meth:`update`); returns them as a Rollout."""
        if not isinstance(n_steps, int) or n_steps <= 0:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        T, N = n_steps, self.n_envs
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "trunc", "ids", "steps", "sim")}
        ep_returns: list[np.ndarray] = []
        ep_lengths: list[np.ndarray] = []
        start = self.buffer.pos
        obs = self._obs
        for _ in range(T):
            if len(self.buffer) < self.cfg.learning_starts:
                action = self.rng.uniform(self.action_space.low, self.action_space.high, (N, *self.action_space.shape))
            else:
                action = self.agent.act(obs)
            action = action.astype(self.action_space.dtype)
            cols["obs"].append(obs)
            cols["act"].append(action)
            cols["ids"].append(self._episode_ids.copy())
            cols["steps"].append(self._ep_steps.copy())
            if self._sim_state is not None:
                cols["sim"].append(np.asarray(self._sim_state, np.float64))
            next_obs, reward, terminated, truncated, info = self.envs.step(action)
            done = terminated | truncated
            stored_next = np.array(next_obs, np.float32)
            if done.any():  # SAME_STEP autoreset: next_obs is already the reset one
                idx = np.nonzero(done)[0]
                stored_next[idx] = np.stack(info["final_obs"][idx])
            self.buffer.add(obs, action, np.zeros(N), stored_next, terminated)
            cols["rew"].append(np.asarray(reward, np.float32))
            cols["term"].append(terminated)
            cols["trunc"].append(truncated)
            self._sim_state = info.get("sim_state")
            self._ep_returns += reward
            self._ep_steps += 1
            if done.any():
                ep_returns.append(self._ep_returns[idx].copy())
                ep_lengths.append(self._ep_steps[idx].copy())
                self._ep_returns[idx], self._ep_steps[idx] = 0.0, 0
                self._new_episodes(idx)
            obs = next_obs
        self._obs = obs
        self._slots = (start + np.arange(T * N)) % self.buffer.capacity  # rows in (t, n) order
        self._slots_relabelled = False
        self.global_step += T * N
        term, trunc = np.stack(cols["term"]), np.stack(cols["trunc"])
        return Rollout(
            obs=np.stack(cols["obs"]), actions=np.stack(cols["act"]), true_rewards=np.stack(cols["rew"]),
            dones=term | trunc, terminated=term, truncated=trunc, episode_ids=np.stack(cols["ids"]),
            steps=np.stack(cols["steps"]), sim_states=np.stack(cols["sim"]) if cols["sim"] else None,
            episode_returns=np.concatenate(ep_returns) if ep_returns else np.zeros(0),
            episode_lengths=np.concatenate(ep_lengths) if ep_lengths else np.zeros(0, np.int64),
            global_step=self.global_step,
        )

    def update(self, rollout: Rollout, rewards: np.ndarray) -> dict[str, float]:
        """Write ``rewards`` (T, N) into the rows :meth:`collect` just filled, then SAC steps on the buffer.

        Rows a :meth:`relabel` reached since the collect keep its rewards: the loop scores a rollout when it
        is collected, so a reward round in between makes ``rewards`` older than the buffer's (PEBBLE keeps
        every stored reward the current model's).
        """
        r = np.asarray(rewards, np.float32)
        if r.shape != rollout.true_rewards.shape:
            raise ValueError(f"rewards must be (T, N) = {rollout.true_rewards.shape}, got {r.shape}")
        if self._slots is None:
            raise ValueError("update() needs a collect() first")
        if not self._slots_relabelled:
            self.buffer.rewards[self._slots] = r.reshape(-1)
        self._slots, self._slots_relabelled = None, False
        if self.pretrained and not self.critic_reset:
            self.agent.reset_critic(seed=self.seed + 7)
            self.critic_reset = True
        return self._train(r.size)

    def pretrain_update(self, rollout: Rollout) -> dict[str, float]:
        """PEBBLE's unsupervised update: SAC steps on the state-entropy reward of each minibatch.

        The first learned-reward :meth:`update` after it starts from fresh Q networks, as PEBBLE does.
        """
        self._slots = None
        self.pretrained = True
        return self._train(rollout.true_rewards.size, self._state_entropy())

    def _state_entropy(self) -> StateEntropyReward:
        if self._entropy_reward is None:  # one instance: its running std spans the whole phase
            self._entropy_reward = StateEntropyReward(self.buffer, self.rng)
        return self._entropy_reward

    def relabel(self, reward_fn: RewardFn) -> None:
        """Recompute every reward in the replay buffer with ``reward_fn`` (after the reward model changed)."""
        self.buffer.relabel(reward_fn)
        self._slots_relabelled = self._slots is not None

    def _train(self, n_env_steps: int, batch_reward: Any = None) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if len(self.buffer) >= self.cfg.learning_starts:
            for _ in range(n_env_steps * self.cfg.updates_per_step):
                batch = self.buffer.sample(self.cfg.batch_size, self.rng, self.agent.device)
                if batch_reward is not None:
                    batch.rewards = batch_reward(batch)
                metrics = self.agent.update(batch)
        metrics["charts/updates"] = float(self.agent.n_updates)
        metrics["charts/global_step"] = float(self.global_step)
        return metrics

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.agent.act(obs, deterministic=deterministic)

    def evaluate(self, env_id: str, n_episodes: int = 10, seed: int = 0, **env_kwargs: Any) -> list[float]:
        """True returns of the deterministic (mean-action) policy, see :func:`evaluate_policy`."""
        return evaluate_policy(self.act, env_id, n_episodes, seed, **env_kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, counters, rng, the replay buffer (so a resumed run keeps its data) and the
        state-entropy normaliser (so a resumed pre-training phase keeps its scale)."""
        entropy = self._entropy_reward.state_dict() if self._entropy_reward is not None else None
        return {"agent": self.agent.state_dict(), "buffer": self.buffer.state_dict(), "global_step": self.global_step,
                "next_episode_id": self._next_episode_id, "rng": self.rng.bit_generator.state,
                "pretrained": self.pretrained, "critic_reset": self.critic_reset, "state_entropy": entropy}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self.global_step = int(state["global_step"])
        self._next_episode_id = int(state["next_episode_id"])
        self.rng.bit_generator.state = state["rng"]
        self.pretrained, self.critic_reset = bool(state["pretrained"]), bool(state["critic_reset"])
        if state.get("state_entropy") is not None:
            self._state_entropy().load_state_dict(state["state_entropy"])
        self._new_episodes(np.arange(self.n_envs))
