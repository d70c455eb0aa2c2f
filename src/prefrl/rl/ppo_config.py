"""PPO hyper-parameters, torch-free (so ``--help`` and config checks never import torch).

The knobs both families share carry cleanrl's names (``learning_rate``, ``update_epochs``,
``num_minibatches``, ``clip_coef``, ``clip_vloss``, ``vf_coef``, ``ent_coef``, ``max_grad_norm``,
``gamma``, ``gae_lambda``, ``target_kl``, ``norm_adv``); :class:`PPOConfig` is the control agent's
set, and :class:`prefrl.lm.ppo_config.LMPPOConfig` uses the same names for the same knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PPOConfig", "check_ppo_knobs"]


def check_ppo_knobs(cfg: object) -> None:
    """Validate the shared PPO knobs of any config that has them (ValueError naming the field)."""
    for name in ("update_epochs", "num_minibatches"):
        if hasattr(cfg, name):
            value = getattr(cfg, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("learning_rate", "clip_coef", "max_grad_norm"):
        if hasattr(cfg, name) and not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)!r}")
    for name in ("gamma", "gae_lambda"):
        if hasattr(cfg, name) and not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {getattr(cfg, name)!r}")
    for name in ("ent_coef", "vf_coef"):
        if hasattr(cfg, name) and not getattr(cfg, name) >= 0:
            raise ValueError(f"{name} must be non-negative, got {getattr(cfg, name)!r}")
    target_kl = getattr(cfg, "target_kl", None)
    if target_kl is not None and not target_kl > 0:
        raise ValueError(f"target_kl must be positive or None, got {target_kl!r}")


@dataclass
class PPOConfig:
    """PPO hyper-parameters of the control agent; defaults are cleanrl's MuJoCo defaults (``ppo_continuous_action.py``)."""

    learning_rate: float = 3e-4
    """Adam learning rate (annealed linearly to 0 over ``total_steps`` when ``anneal_lr``)."""
    num_steps: int = 2048
    """Env steps collected per environment between two updates (rollout length T)."""
    gamma: float = 0.99
    """Discount factor γ."""
    gae_lambda: float = 0.95
    """GAE λ (Schulman et al. 2016)."""
    num_minibatches: int = 32
    """Minibatches per epoch; the minibatch size is num_steps·n_envs / num_minibatches."""
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
    """Anneal the learning rate linearly from ``learning_rate`` to 0 over ``total_steps``."""
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
        for name in ("num_steps", "total_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_ppo_knobs(self)
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps!r}")

    def minibatch_size(self, n_envs: int) -> int:
        """num_steps·n_envs / num_minibatches; ValueError when a minibatch would be empty."""
        batch = self.num_steps * n_envs
        if batch < self.num_minibatches:
            raise ValueError(f"num_steps·n_envs = {batch} is smaller than num_minibatches = {self.num_minibatches}")
        return batch // self.num_minibatches
