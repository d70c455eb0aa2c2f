"""One PPO update over a rollout buffer (Schulman et al. 2017), built only from :mod:`prefrl.losses`.

The order follows cleanrl's ``ppo_continuous_action.py``: advantages (GAE) are computed by
:meth:`RolloutBuffer.from_rollout`, then :func:`ppo_update` runs ``update_epochs`` passes of
``n_minibatches`` shuffled minibatches with per-minibatch advantage normalisation, the
clipped surrogate, the (optionally clipped) value loss, an entropy bonus and global
gradient-norm clipping. The policy is anything with cleanrl's
``get_action_and_value(obs, action) -> (action, logprob, entropy, value)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from prefrl.losses import clipped_surrogate_loss, clipped_value_loss, gae, kl_estimate

__all__ = ["PPOConfig", "RolloutBuffer", "ActorCriticPolicy", "ppo_update", "explained_variance"]


@dataclass
class PPOConfig:
    """PPO hyper-parameters; defaults are cleanrl's MuJoCo defaults (``ppo_continuous_action.py``)."""

    lr: float = 3e-4
    """Adam learning rate (annealed linearly to 0 over ``total_steps`` when ``anneal_lr``)."""
    n_steps: int = 2048
    """Env steps collected per environment between two updates (rollout length T)."""
    gamma: float = 0.99
    """Discount factor γ."""
    gae_lambda: float = 0.95
    """GAE λ (Schulman et al. 2016)."""
    n_minibatches: int = 32
    """Minibatches per epoch; the minibatch size is n_steps·n_envs / n_minibatches."""
    update_epochs: int = 10
    """Passes over the rollout per update (K in the PPO paper)."""
    clip_coef: float = 0.2
    """PPO clipping ε of the probability ratio (and of the value change when ``clip_vloss``)."""
    clip_vloss: bool = True
    """Clip the value-function change to ±clip_coef around the rollout's values."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch to zero mean and unit std."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly from ``lr`` to 0 over ``total_steps``."""
    target_kl: float | None = None
    """Stop the epochs early once the approximate KL of an epoch exceeds this (None: never)."""
    total_steps: int = 1_000_000
    """Total env steps of the run (all envs together); the horizon of lr annealing."""
    adam_eps: float = 1e-5
    """Adam ε (cleanrl and the PPO implementation-details blog use 1e-5)."""
    norm_obs: bool = True
    """Running mean/std normalisation of vector observations (clipped to ±10), inside the agent."""
    norm_reward: bool = False
    """Scale rewards by a running std of discounted returns (gymnasium's NormalizeReward), clipped to ±10."""

    def __post_init__(self) -> None:
        positive_int = ("n_steps", "n_minibatches", "update_epochs", "total_steps")
        for name in positive_int:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "clip_coef", "max_grad_norm", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"target_kl must be positive or None, got {self.target_kl!r}")

    def minibatch_size(self, n_envs: int) -> int:
        """n_steps·n_envs / n_minibatches; ValueError when a minibatch would be empty."""
        batch = self.n_steps * n_envs
        if batch < self.n_minibatches:
            raise ValueError(f"n_steps·n_envs = {batch} is smaller than n_minibatches = {self.n_minibatches}")
        return batch // self.n_minibatches


class ActorCriticPolicy(Protocol):
    """What :func:`ppo_update` needs of a policy (cleanrl's interface)."""

    def get_action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def parameters(self): ...  # noqa: ANN201 - torch.nn.Module.parameters


@dataclass
class RolloutBuffer:
    """A flattened rollout (B = T·N samples) with its advantages, ready for :func:`ppo_update`.

    Attributes:
        obs: (B, *obs_shape) policy inputs (already normalised).
        actions: (B, *act_shape) actions as sampled by the policy (unclipped for Box spaces).
        logprobs: (B,) log π_old(a|s).
        values: (B,) V_old(s).
        advantages: (B,) GAE advantages.
        returns: (B,) λ-returns, advantages + values (the value target).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __post_init__(self) -> None:
        b = self.obs.shape[0]
        for name in ("actions", "logprobs", "values", "advantages", "returns"):
            t = getattr(self, name)
            if t.shape[0] != b:
                raise ValueError(f"{name} has {t.shape[0]} samples but obs has {b}")
        for name in ("logprobs", "values", "advantages", "returns"):
            if getattr(self, name).dim() != 1:
                raise ValueError(f"{name} must be (B,), got shape {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def from_rollout(
        cls,
        obs: torch.Tensor,
        actions: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
        last_values: torch.Tensor,
        gamma: float,
        gae_lambda: float,
    ) -> RolloutBuffer:
        """GAE over time-major (T, N, …) arrays, then flatten to (T·N, …).

        ``dones[t]`` marks that the episode ended at step t (terminated *or* truncated); a
        truncated step's bootstrap γ·V(s_final) must already be folded into ``rewards[t]``.
        """
        if rewards.dim() != 2:
            raise ValueError(f"rewards must be (T, N), got shape {tuple(rewards.shape)}")
        t, n = rewards.shape
        if obs.shape[:2] != (t, n) or actions.shape[:2] != (t, n):
            raise ValueError(
                f"obs {tuple(obs.shape)} and actions {tuple(actions.shape)} must start with (T, N) = {(t, n)}"
            )
        with torch.no_grad():
            advantages, returns = gae(rewards, values, last_values, dones, gamma, gae_lambda)  # (T, N)
        return cls(
            obs=obs.reshape(t * n, *obs.shape[2:]),
            actions=actions.reshape(t * n, *actions.shape[2:]),
            logprobs=logprobs.reshape(-1),
            values=values.reshape(-1),
            advantages=advantages.reshape(-1),
            returns=returns.reshape(-1),
        )


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor) -> float:
    """1 − Var[y − ŷ] / Var[y]; NaN when Var[y] = 0."""
    var_y = torch.var(y_true)
    if var_y.item() == 0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred) / var_y)


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global-norm gradient clipping in two fused calls (same maths as ``clip_grad_norm_``)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


def ppo_update(
    policy: ActorCriticPolicy,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBuffer,
    cfg: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Run ``cfg.update_epochs`` epochs of minibatch PPO on ``batch``; return the diagnostics.

    Loss per minibatch: L = L_clip − ent_coef·H + vf_coef·L_V, with advantages normalised
    per minibatch when ``cfg.norm_adv``. ``policy/approx_kl`` is the k3 estimator
    (r − 1) − log r of KL(π_old ‖ π_new) (Schulman 2020), ``policy/clipfrac`` the fraction of
    samples with |ρ − 1| > clip_coef; all diagnostics are means over the last epoch's minibatches.

    Args:
        policy: module with ``get_action_and_value(obs, action)``.
        optimizer: its optimiser (the caller sets the learning rate, e.g. annealed).
        batch: the flattened rollout with advantages and returns.
        cfg: hyper-parameters.
        generator: torch RNG for the minibatch permutations (explicit for reproducibility).

    Returns:
        ``loss/policy``, ``loss/value``, ``loss/entropy``, ``policy/approx_kl``,
        ``policy/clipfrac``, ``val/explained_variance``, ``policy/epochs`` (epochs run).
    """
    b = len(batch)
    if b < cfg.n_minibatches:
        raise ValueError(f"batch has {b} samples, fewer than n_minibatches = {cfg.n_minibatches}")
    mb_size = b // cfg.n_minibatches
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip_vcoef = cfg.clip_coef if cfg.clip_vloss else None

    pg_losses: list[torch.Tensor] = []
    v_losses: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    kls: list[torch.Tensor] = []
    clipfracs: list[torch.Tensor] = []
    epochs_run = 0
    n_used = mb_size * cfg.n_minibatches
    for epoch in range(cfg.update_epochs):
        pg_losses.clear(), v_losses.clear(), entropies.clear(), kls.clear(), clipfracs.clear()
        # Permute once per epoch; the minibatches are then contiguous slices (views), not gathers.
        b_inds = torch.randperm(b, generator=generator)[:n_used]
        e_obs, e_actions = batch.obs[b_inds], batch.actions[b_inds]
        e_logprobs, e_values = batch.logprobs[b_inds], batch.values[b_inds]
        e_advantages, e_returns = batch.advantages[b_inds], batch.returns[b_inds]
        if cfg.norm_adv and mb_size > 1:
            # Per-minibatch normalisation, for all minibatches of the epoch in one go.
            a = e_advantages.view(cfg.n_minibatches, mb_size)
            e_advantages = ((a - a.mean(1, keepdim=True)) / (a.std(1, keepdim=True) + 1e-8)).view(-1)
        # The diagnostics are reported for the last epoch (and needed every epoch for target_kl).
        track = cfg.target_kl is not None or epoch == cfg.update_epochs - 1
        for start in range(0, n_used, mb_size):
            mb = slice(start, start + mb_size)
            mb_old_logprobs = e_logprobs[mb]
            _, new_logprobs, entropy, new_values = policy.get_action_and_value(
                e_obs[mb], e_actions[mb]
            )  # (mb,) each
            pg_loss = clipped_surrogate_loss(new_logprobs, mb_old_logprobs, e_advantages[mb], cfg.clip_coef)
            v_loss = clipped_value_loss(new_values, e_values[mb], e_returns[mb], clip_vcoef)
            loss = pg_loss + cfg.vf_coef * v_loss
            if cfg.ent_coef != 0.0:  # skipped, not multiplied by 0: fewer autograd nodes per minibatch
                loss = loss - cfg.ent_coef * entropy.mean()

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _clip_grad_norm(params, cfg.max_grad_norm)
            optimizer.step()

            if track:
                with torch.no_grad():
                    new_lp = new_logprobs.detach()
                    kls.append(kl_estimate(mb_old_logprobs, new_lp, "k3").mean())
                    clipfracs.append(
                        ((new_lp - mb_old_logprobs).exp().sub_(1.0).abs_() > cfg.clip_coef).float().mean()
                    )
                pg_losses.append(pg_loss.detach())
                v_losses.append(v_loss.detach())
                entropies.append(entropy.detach().mean())
        epochs_run += 1
        if cfg.target_kl is not None and torch.stack(kls).mean().item() > cfg.target_kl:
            break

    return {
        "loss/policy": torch.stack(pg_losses).mean().item(),
        "loss/value": torch.stack(v_losses).mean().item(),
        "loss/entropy": torch.stack(entropies).mean().item(),
        "policy/approx_kl": torch.stack(kls).mean().item(),
        "policy/clipfrac": torch.stack(clipfracs).mean().item(),
        "val/explained_variance": explained_variance(batch.values, batch.returns),
        "policy/epochs": float(epochs_run),
    }
