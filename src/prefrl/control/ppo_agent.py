"""The policy-optimiser seam of the control loop: our PPO agent.

``PPOAgent.collect(n_steps)`` runs the current policy in the vector env and returns a
:class:`Rollout` with everything the preference loop needs (raw observations, the actions
actually sent, the hidden true rewards, episode bookkeeping, simulator states); the
caller then decides which reward to optimise and calls ``update(rollout, rewards)``.
The true reward is recorded but never used unless the caller passes it.

Hot-loop rules (the env loop is the agent's throughput): per vector step only the actor
runs (no critic, no log-probabilities: those are computed for the whole rollout in one
batched call afterwards; a CNN policy, whose torso actor and critic share, computes them in
its one forward per step instead), with the sampling noise drawn for the whole rollout up front; one
numpy → torch conversion of the observations (normalised in place into a preallocated
buffer) and one torch → numpy conversion of the actions; no per-env Python work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prefrl.control.envs import make_vec_env
from prefrl.control.policies import ActorCritic
from prefrl.control.rollout import Rollout, RunningMeanStd
from prefrl.rl.ppo import PPOConfig, RolloutBuffer, ppo_update

__all__ = ["PPOAgent", "Rollout", "RunningMeanStd", "evaluate_policy"]  # Rollout, RunningMeanStd: re-exported from rollout

_OBS_CLIP = 10.0
_REWARD_CLIP = 10.0


class PPOAgent:
    """PPO on a gymnasium vector env in SAME_STEP autoreset mode (see :func:`make_vec_env`).

    Args:
        envs: the vector env (N sub-envs). It is reset once here, without a seed: seed it
            when building it (``make_vec_env(seed=…)``).
        cfg: PPO hyper-parameters (also obs normalisation and reward scaling switches).
        seed: seeds the agent's torch generators (initialisation, action sampling, minibatches).
        device: torch device of the policy.
        hidden: MLP hidden sizes of :class:`ActorCritic`.
        cnn: image torso of :class:`ActorCritic` (``nature`` or ``a3c``).
    """

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        cfg: PPOConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
        hidden: tuple[int, ...] = (64, 64),
        cnn: str = "nature",
    ) -> None:
        autoreset = envs.metadata.get("autoreset_mode")
        if autoreset is not None and autoreset != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                f"envs must use AutoresetMode.SAME_STEP (build them with make_vec_env), got {autoreset}"
            )
        self.envs = envs
        self.cfg = cfg
        self.device = torch.device(device)
        self.n_envs = int(envs.num_envs)
        self.obs_space = envs.single_observation_space
        self.action_space = envs.single_action_space
        # Two streams, so that an update replayed on a saved rollout sees the same minibatches.
        self.generator = torch.Generator().manual_seed(seed)  # action sampling
        self.update_generator = torch.Generator().manual_seed(seed + 1_000_003)  # minibatch permutations
        # Layer init draws from torch's global RNG: fork it, so the caller's stream is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = ActorCritic(self.obs_space, self.action_space, hidden, cnn).to(self.device)
        # The fused kernel updates all parameters in one call (≈4× faster than the default on CPU).
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, fused=True)
        self.continuous = isinstance(self.action_space, gym.spaces.Box)
        self.normalize_obs = cfg.norm_obs and not self.policy.image
        self.obs_rms = RunningMeanStd(self.obs_space.shape)
        self.ret_rms = RunningMeanStd(())
        self._ret_acc = np.zeros(self.n_envs, np.float64)  # running discounted return for reward scaling
        if self.continuous:
            self._act_low = self.action_space.low.astype(np.float32)
            self._act_high = self.action_space.high.astype(np.float32)
        self.global_step = 0
        self.updates = 0
        self._next_episode_id = 0
        self._reset_envs()

    # ------------------------------------------------------------------ bookkeeping

    def _reset_envs(self) -> None:
        obs, info = self.envs.reset()
        self._obs = obs
        self._sim_state = self._info_sim_state(info)
        self._episode_ids = np.arange(self._next_episode_id, self._next_episode_id + self.n_envs, dtype=np.int64)
        self._next_episode_id += self.n_envs
        self._ep_steps = np.zeros(self.n_envs, np.int64)
        self._ep_returns = np.zeros(self.n_envs, np.float64)

    @staticmethod
    def _info_sim_state(info: dict[str, Any]) -> np.ndarray | None:
        state = info.get("sim_state")
        return None if state is None else np.asarray(state, np.float64)

    def _normalize(self, obs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """clip((o − μ) / σ, ±10) as float32, written into ``out`` when given."""
        y = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)
        if out is None:
            out = np.empty(y.shape, np.float32)
        return np.clip(y, -_OBS_CLIP, _OBS_CLIP, out=out)

    def _policy_input(self, obs: np.ndarray, update: bool) -> torch.Tensor:
        """Raw obs (N, …) → policy input tensor; updates the running normaliser when asked."""
        if not self.normalize_obs:
            return torch.as_tensor(obs, device=self.device)
        if update:
            self.obs_rms.update(obs)
        return torch.from_numpy(self._normalize(obs)).to(self.device)

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        a = action.cpu().numpy()
        if self.continuous:
            return np.clip(a, self._act_low, self._act_high)
        return a

    # ------------------------------------------------------------------ collect

    def collect(self, n_steps: int | None = None) -> Rollout:
        """Run the stochastic policy for ``n_steps`` vector steps (default ``cfg.n_steps``).

        The env loop runs the actor alone, with the sampling noise of the whole rollout drawn
        up front (:meth:`ActorCritic.draw_noise`); log π_old(a|o) and V_old(o) are then
        computed for all T·N steps in one batched call. Same distribution, same numbers up to
        float rounding, about a tenth of the per-step policy cost.
        """
        T = self.cfg.num_steps if n_steps is None else n_steps
        if not isinstance(T, int) or T <= 0:
            raise ValueError(f"n_steps must be a positive integer, got {T!r}")
        N = self.n_envs
        obs_shape = self.obs_space.shape
        raw_dtype = self.obs_space.dtype
        obs_buf = np.zeros((T, N, *obs_shape), raw_dtype)
        # Normalised policy inputs are written in place; the tensor view shares the memory.
        pobs_buf = np.zeros((T, N, *obs_shape), np.float32) if self.normalize_obs else None
        pact_list: list[torch.Tensor] = []
        act_buf = np.zeros((T, N, *self.action_space.shape), self.action_space.dtype)
        final_value_buf = torch.zeros((T, N))
        rew_buf = np.zeros((T, N), np.float32)
        term_buf = np.zeros((T, N), bool)
        trunc_buf = np.zeros((T, N), bool)
        epid_buf = np.zeros((T, N), np.int64)
        step_buf = np.zeros((T, N), np.int64)
        sim_buf = None if self._sim_state is None else np.zeros((T, N, self._sim_state.shape[-1]), np.float64)
        ep_returns: list[np.ndarray] = []
        ep_lengths: list[np.ndarray] = []

        policy = self.policy
        # A CNN's torso is shared by actor and critic: one forward per step gives the action, log π
        # and V, where re-scoring the rollout afterwards would run the torso a second time.
        scored = policy.image and not self.continuous
        lp_buf, v_buf = (torch.zeros((T, N)), torch.zeros((T, N))) if scored else (None, None)
        obs = self._obs
        with torch.no_grad():
            noise = policy.draw_noise((T, N), generator=self.generator).to(self.device)
            for t in range(T):
                obs_buf[t] = obs
                epid_buf[t] = self._episode_ids
                step_buf[t] = self._ep_steps
                if sim_buf is not None:
                    sim_buf[t] = self._sim_state
                if pobs_buf is not None:
                    self.obs_rms.update(obs)
                    x = torch.from_numpy(self._normalize(obs, out=pobs_buf[t])).to(self.device)
                else:
                    x = torch.from_numpy(obs_buf[t]).to(self.device)
                if lp_buf is not None and v_buf is not None:
                    logits, v_buf[t] = policy(x)  # (N, n), (N,)
                    action = (logits + noise[t]).argmax(-1)  # Gumbel-max: a sample of softmax(logits)
                    lp_buf[t] = torch.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
                else:
                    action = policy.sample(x, noise[t])
                pact_list.append(action)
                env_action = self._env_action(action)
                act_buf[t] = env_action

                obs, reward, terminated, truncated, info = self.envs.step(env_action)
                rew_buf[t] = reward
                term_buf[t] = terminated
                trunc_buf[t] = truncated
                if sim_buf is not None:
                    self._sim_state = self._info_sim_state(info)
                self._ep_returns += reward
                self._ep_steps += 1
                done = terminated | truncated
                if done.any():
                    # Bootstrap truncated episodes from V(o_final) (SAME_STEP: info["final_obs"]).
                    trunc_idx = np.nonzero(truncated & ~terminated)[0]
                    if trunc_idx.size:
                        final_obs = np.stack(info["final_obs"][trunc_idx])
                        final_value_buf[t, trunc_idx] = policy.get_value(self._policy_input(final_obs, update=False))
                    done_idx = np.nonzero(done)[0]
                    ep_returns.append(self._ep_returns[done_idx].copy())
                    ep_lengths.append(self._ep_steps[done_idx].copy())
                    self._ep_returns[done_idx] = 0.0
                    self._ep_steps[done_idx] = 0
                    self._episode_ids[done_idx] = np.arange(
                        self._next_episode_id, self._next_episode_id + done_idx.size
                    )
                    self._next_episode_id += done_idx.size
            last_values = policy.get_value(self._policy_input(obs, update=False))
            # Image obs are not normalised: the policy input is the raw uint8 stack.
            pobs = torch.from_numpy(pobs_buf if pobs_buf is not None else obs_buf)
            pact = torch.stack(pact_list)
            logprobs, values = (lp_buf, v_buf) if lp_buf is not None and v_buf is not None else self._score(pobs, pact)
        self._obs = obs
        self.global_step += T * N

        return Rollout(
            obs=obs_buf,
            actions=act_buf,
            true_rewards=rew_buf,
            dones=term_buf | trunc_buf,
            terminated=term_buf,
            truncated=trunc_buf,
            episode_ids=epid_buf,
            steps=step_buf,
            sim_states=sim_buf,
            episode_returns=np.concatenate(ep_returns) if ep_returns else np.zeros(0),
            episode_lengths=np.concatenate(ep_lengths) if ep_lengths else np.zeros(0, np.int64),
            global_step=self.global_step,
            policy_obs=pobs,
            policy_actions=pact,
            logprobs=logprobs,
            values=values,
            final_values=final_value_buf,
            last_values=last_values,
        )

    def _score(self, pobs: torch.Tensor, pact: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|o) and V(o) for (T, N, …) policy inputs and actions, batched (in chunks for frames)."""
        T, N = pact.shape[:2]
        flat_obs = pobs.reshape(T * N, *pobs.shape[2:]).to(self.device)
        flat_act = pact.reshape(T * N, *pact.shape[2:]).to(self.device)
        logprobs, values = [], []
        step = chunk if self.policy.image else T * N  # frames: bounded memory per forward
        for i in range(0, T * N, step):
            _, lp, _, v = self.policy.get_action_and_value(flat_obs[i : i + step], flat_act[i : i + step])
            logprobs.append(lp)
            values.append(v)
        return torch.cat(logprobs).reshape(T, N).cpu(), torch.cat(values).reshape(T, N).cpu()

    # ------------------------------------------------------------------ update

    def _scale_rewards(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """r / std(discounted return), clipped (gymnasium's NormalizeReward, one RMS update per rollout)."""
        returns = np.zeros_like(rewards, dtype=np.float64)  # (T, N)
        acc = self._ret_acc
        for t in range(rewards.shape[0]):
            acc = acc * self.cfg.gamma + rewards[t]
            returns[t] = acc
            acc = np.where(dones[t], 0.0, acc)
        self._ret_acc = acc
        self.ret_rms.update(returns.reshape(-1))
        return np.clip(rewards / np.sqrt(self.ret_rms.var + 1e-8), -_REWARD_CLIP, _REWARD_CLIP)

    def current_lr(self) -> float:
        """The learning rate the next update uses (linear annealing over ``cfg.total_steps``)."""
        if not self.cfg.anneal_lr:
            return self.cfg.learning_rate
        # The first update (global_step = one rollout) uses the full rate, as in cleanrl.
        done = max(self.global_step - self.cfg.num_steps * self.n_envs, 0)
        return self.cfg.learning_rate * max(1.0 - done / self.cfg.total_steps, 0.0)

    def update(self, rollout: Rollout, rewards: np.ndarray | torch.Tensor) -> dict[str, float]:
        """GAE on ``rewards`` (T, N) — learned or true — then :func:`ppo_update`.

        Returns the PPO diagnostics plus ``charts/learning_rate``, ``charts/global_step``
        and ``charts/updates``.
        """
        if rollout.logprobs is None or rollout.policy_actions is None or rollout.policy_obs is None:
            raise ValueError("rollout carries no policy data (was it collected by this PPOAgent?)")
        r = rewards.detach().cpu().numpy() if isinstance(rewards, torch.Tensor) else np.asarray(rewards)
        if r.shape != rollout.true_rewards.shape:
            raise ValueError(f"rewards must be (T, N) = {rollout.true_rewards.shape}, got {r.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("rewards contain NaN or inf")
        if self.cfg.norm_reward:
            r = self._scale_rewards(r, rollout.dones)
        r_t = torch.as_tensor(r, dtype=torch.float32, device=self.device)
        # Truncation is not termination: fold γ·V(o_final) into the last reward of a truncated episode.
        r_t = r_t + self.cfg.gamma * rollout.final_values.to(self.device)

        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = RolloutBuffer.from_rollout(
            rollout.policy_obs.to(self.device),
            rollout.policy_actions.to(self.device),
            rollout.logprobs.to(self.device),
            rollout.values.to(self.device),
            r_t,
            torch.as_tensor(rollout.dones, device=self.device),
            rollout.last_values.to(self.device),
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )
        metrics = ppo_update(self.policy, self.optimizer, batch, self.cfg, generator=self.update_generator)
        self.updates += 1
        metrics["charts/learning_rate"] = lr
        metrics["charts/global_step"] = float(self.global_step)
        metrics["charts/updates"] = float(self.updates)
        return metrics

    # ------------------------------------------------------------------ acting / evaluation

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Env actions for raw observations (N, …) without touching the normaliser."""
        with torch.no_grad():
            x = self._policy_input(np.asarray(obs), update=False)
            if deterministic:  # the mean (Box) or the most likely action (Discrete)
                out = self.policy.actor_output(x)
                action = out if self.continuous else out.argmax(-1)
            else:
                noise = self.policy.draw_noise((x.shape[0],), generator=self.generator).to(self.device)
                action = self.policy.sample(x, noise)
        return self._env_action(action)

    def evaluate(self, env_id: str, n_episodes: int = 10, seed: int = 0, **env_kwargs: Any) -> list[float]:
        """True returns of ``n_episodes`` episodes of the deterministic policy (see :func:`evaluate_policy`)."""
        return evaluate_policy(self.act, env_id, n_episodes, seed, **env_kwargs)

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Policy, optimiser, normalisers, counters and the agent's torch RNGs (not the envs)."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "ret_rms": self.ret_rms.state_dict(),
            "ret_acc": self._ret_acc.copy(),
            "global_step": self.global_step,
            "updates": self.updates,
            "next_episode_id": self._next_episode_id,
            "generator": self.generator.get_state(),
            "update_generator": self.update_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; episodes in progress get fresh ids after the saved counter."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self._ret_acc = np.array(state["ret_acc"], np.float64)
        self.global_step = int(state["global_step"])
        self.updates = int(state["updates"])
        self._next_episode_id = int(state["next_episode_id"])
        self.generator.set_state(state["generator"])
        self.update_generator.set_state(state["update_generator"])
        self._episode_ids = np.arange(self._next_episode_id, self._next_episode_id + self.n_envs, dtype=np.int64)
        self._next_episode_id += self.n_envs


def evaluate_policy(
    act: Callable[..., np.ndarray], env_id: str, n_episodes: int = 10, seed: int = 0, **env_kwargs: Any
) -> list[float]:
    """True returns of ``n_episodes`` episodes of ``act(obs, deterministic=True)`` (one per env, seeds ``seed + i``).

    ``env_kwargs`` go to :func:`make_vec_env` (e.g. ``fixed_horizon`` to match training).
    """
    if n_episodes <= 0:
        raise ValueError(f"n_episodes must be positive, got {n_episodes}")
    returns: list[float] = []
    env_kwargs.setdefault("record_sim_state", False)
    # Atari: the Gymnasium wrappers, not ale-py's vector env, so that a recorded clip (which renders
    # through them) replays the first evaluation episode of the same seed.
    env_kwargs.setdefault("ale_vector", False)
    for start in range(0, n_episodes, 16):
        n = min(16, n_episodes - start)
        envs = make_vec_env(env_id, n_envs=n, seed=seed + start, **env_kwargs)
        try:
            obs, _ = envs.reset()
            ep_ret = np.zeros(n)
            finished = np.zeros(n, bool)
            while not finished.all():
                obs, reward, terminated, truncated, _ = envs.step(act(obs, deterministic=True))
                ep_ret += np.where(finished, 0.0, reward)
                finished |= terminated | truncated
            returns.extend(float(x) for x in ep_ret)
        finally:
            envs.close()
    return returns
