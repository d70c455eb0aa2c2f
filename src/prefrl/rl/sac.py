"""Soft actor-critic (Haarnoja et al. 2018), prefrl's off-policy optimiser for continuous actions.

Twin Q networks with polyak-averaged targets, a tanh-squashed Gaussian policy, delayed policy
updates and automatic entropy temperature — cleanrl's ``sac_continuous_action.py`` read top to
bottom, with the math in :mod:`prefrl.losses` (:func:`soft_q_target`, :func:`sac_critic_loss`,
:func:`sac_actor_loss`, :func:`sac_temperature_loss`). The rewards a minibatch carries are whatever
the :class:`prefrl.rl.replay.ReplayBuffer` holds, so learning from a changing reward model is the
buffer's job (:meth:`ReplayBuffer.relabel`, PEBBLE), not the agent's.

:func:`run_sac` is the plain env loop (one gymnasium env): act → store → update.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from prefrl.losses import sac_actor_loss, sac_critic_loss, sac_temperature_loss, soft_q_target
from prefrl.rl.replay import ReplayBatch, ReplayBuffer, RewardFn
from prefrl.rl.sac_config import SACConfig

__all__ = ["SACConfig", "SACAgent", "SquashedGaussianActor", "QNetwork", "run_sac", "polyak_update"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """Q(s, a): MLP over the concatenation [s, a] → (B,)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = _mlp([obs_dim + act_dim, *hidden, 1])

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], dim=-1)).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """π(a|s) = low + (high − low)·(tanh(u) + 1)/2, u ~ N(μ(s), σ(s)²) (Haarnoja et al. 2018, appendix C)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.trunk = _mlp([obs_dim, *hidden])
        self.trunk.append(nn.ReLU())
        self.mean = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        log_std = torch.tanh(self.log_std(h))  # bounded, as cleanrl: smooth in [LOG_STD_MIN, LOG_STD_MAX]
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return self.mean(h), log_std

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised action (B, A), its log π (B,), and the deterministic (mean) action (B, A)."""
        mean, log_std = self(obs)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * noise
        y = torch.tanh(u)
        action = y * self.action_scale + self.action_bias
        # log π(a|s) = log N(u; μ, σ) − Σ log(scale·(1 − tanh²u)), the change of variables of appendix C
        log_normal = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_jacobian = torch.log(self.action_scale * (1 - y.pow(2)) + 1e-6).sum(-1)
        return action, log_normal - log_jacobian, torch.tanh(mean) * self.action_scale + self.action_bias


def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ̄ ← τ·θ + (1 − τ)·θ̄ for every parameter pair."""
    with torch.no_grad():
        for p_target, p in zip(target.parameters(), source.parameters()):
            p_target.mul_(1.0 - tau).add_(p, alpha=tau)


class SACAgent:
    """The networks, optimisers and one gradient step of SAC for a Box action space.

    Args:
        obs_dim: flat observation size.
        action_low: (A,) lower action bounds; ``action_high`` the upper ones.
        cfg: hyper-parameters.
        seed: seeds the parameter initialisation and the policy's sampling noise (torch's global
            generator is left alone: this agent draws from its own).
    """

    def __init__(
        self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, cfg: SACConfig | None = None,
        seed: int = 0, device: str | torch.device = "cpu",
    ) -> None:
        self.cfg = cfg = cfg or SACConfig()
        self.device = torch.device(device)
        low, high = np.asarray(action_low, dtype=np.float32), np.asarray(action_high, dtype=np.float32)
        act_dim = int(low.shape[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = SquashedGaussianActor(obs_dim, act_dim, cfg.hidden, low, high).to(self.device)
            self.q1 = QNetwork(obs_dim, act_dim, cfg.hidden).to(self.device)
            self.q2 = QNetwork(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.q_lr)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr)
        self.target_entropy = -cfg.target_entropy_scale * act_dim
        self.log_alpha = torch.tensor(math.log(cfg.alpha), device=self.device, requires_grad=cfg.autotune)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr) if cfg.autotune else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.n_updates = 0

    def reset_critic(self, seed: int = 0) -> None:
        """Fresh Q networks, targets and critic optimiser (PEBBLE does this when its unsupervised phase ends:
        the Q values learnt for the intrinsic reward mean nothing under the learned one)."""
        obs_dim = self.q1.net[0].in_features - self.actor.mean.out_features
        act_dim = self.actor.mean.out_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q1 = QNetwork(obs_dim, act_dim, self.cfg.hidden).to(self.device)
            self.q2 = QNetwork(obs_dim, act_dim, self.cfg.hidden).to(self.device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=self.cfg.q_lr)

    @property
    def alpha(self) -> float:
        return self.log_alpha.detach().exp().item()

    def _sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the policy's noise comes from self.generator, so runs are reproducible without global seeding
        return self.actor.sample(obs, self.generator)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions (N, A) for observations (N, obs_dim): sampled from π, or its mean when ``deterministic``."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        action, _, mean_action = self._sample(obs_t)
        return (mean_action if deterministic else action).cpu().numpy()

    def update(self, batch: ReplayBatch) -> dict[str, float]:
        """One SAC gradient step on a minibatch: critics; every ``policy_frequency`` steps policy and α; targets."""
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_logprobs, _ = self._sample(batch.next_obs)
            target = soft_q_target(
                batch.rewards, batch.terminated, self.q1_target(batch.next_obs, next_actions),
                self.q2_target(batch.next_obs, next_actions), next_logprobs, alpha, cfg.gamma,
            )
        q1, q2 = self.q1(batch.obs, batch.actions), self.q2(batch.obs, batch.actions)
        q_loss = sac_critic_loss(q1, q2, target)
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        metrics = {"loss/q": q_loss.item(), "q/mean": q1.detach().mean().item(), "q/target_mean": target.mean().item()}

        self.n_updates += 1
        if self.n_updates % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):  # cleanrl: compensate the delay with as many policy steps
                actions, logprobs, _ = self._sample(batch.obs)
                actor_loss = sac_actor_loss(logprobs, self.q1(batch.obs, actions), self.q2(batch.obs, actions),
                                            self.log_alpha.exp())
                self.actor_optimizer.zero_grad()
                actor_loss.backward()
                self.actor_optimizer.step()
                if self.alpha_optimizer is not None:
                    alpha_loss = sac_temperature_loss(self.log_alpha, logprobs, self.target_entropy)
                    self.alpha_optimizer.zero_grad()
                    alpha_loss.backward()
                    self.alpha_optimizer.step()
                    metrics["loss/alpha"] = alpha_loss.item()
            metrics["loss/policy"] = actor_loss.item()
            metrics["policy/entropy"] = -logprobs.detach().mean().item()
        if self.n_updates % cfg.target_network_frequency == 0:
            polyak_update(self.q1_target, self.q1, cfg.tau)
            polyak_update(self.q2_target, self.q2, cfg.tau)
        metrics["policy/alpha"] = self.alpha
        return metrics

    def state_dict(self) -> dict[str, Any]:
        modules = ("actor", "q1", "q2", "q1_target", "q2_target", "q_optimizer", "actor_optimizer")
        state = {name: getattr(self, name).state_dict() for name in modules}
        state.update(log_alpha=self.log_alpha.item(), n_updates=self.n_updates,
                     generator=self.generator.get_state())
        if self.alpha_optimizer is not None:
            state["alpha_optimizer"] = self.alpha_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "q1", "q2", "q1_target", "q2_target", "q_optimizer", "actor_optimizer"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.fill_(state["log_alpha"])
        if self.alpha_optimizer is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.n_updates = int(state["n_updates"])
        self.generator.set_state(state["generator"])


def run_sac(
    env: Any,
    agent: SACAgent,
    buffer: ReplayBuffer,
    total_steps: int,
    rng: np.random.Generator,
    reward_fn: RewardFn | None = None,
    batch_reward: Callable[[ReplayBatch], torch.Tensor] | None = None,
    seed: int | None = None,
) -> list[float]:
    """Train ``agent`` for ``total_steps`` steps of one gymnasium ``env``; returns each finished episode's env return.

    The stored reward is the env's, or ``reward_fn(obs, action)`` when given (a learned reward;
    call ``buffer.relabel(reward_fn)`` whenever it changes). ``batch_reward(batch)`` replaces a
    minibatch's rewards just before the update (an intrinsic reward computed against the buffer,
    e.g. PEBBLE's state entropy). The first ``learning_starts`` steps act uniformly at random.
    """
    cfg = agent.cfg
    obs, _ = env.reset(seed=seed)
    episode_returns: list[float] = []
    episode_return = 0.0
    for _ in range(total_steps):
        if len(buffer) < cfg.learning_starts:
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        else:
            action = agent.act(obs[None])[0]
        next_obs, env_reward, terminated, truncated, _ = env.step(action)
        episode_return += float(env_reward)
        reward = env_reward if reward_fn is None else reward_fn(obs[None], action[None])[0]
        buffer.add(obs[None], action[None], np.array([reward]), next_obs[None], np.array([terminated]))
        obs = next_obs
        if terminated or truncated:
            episode_returns.append(episode_return)
            episode_return = 0.0
            obs, _ = env.reset()
        if len(buffer) >= cfg.learning_starts:
            for _ in range(cfg.updates_per_step):
                batch = buffer.sample(cfg.batch_size, rng, agent.device)
                if batch_reward is not None:
                    batch.rewards = batch_reward(batch)
                agent.update(batch)
    return episode_returns
