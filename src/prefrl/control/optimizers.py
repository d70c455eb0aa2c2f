"""The policy-optimiser seam of the control loop, and the one factory that builds one by name.

Every optimiser owns its vector env and offers the same few calls::

    rollout = opt.collect(n_steps)          # run the current policy; env reward hidden
    metrics = opt.update(rollout, rewards)  # learn on the learned (or true) rewards (T, N)

plus ``act``/``evaluate`` for evaluation and ``state_dict``/``load_state_dict`` for checkpoints.
``ppo`` is our :class:`~prefrl.control.ppo_agent.PPOAgent`; ``sac`` our
:class:`~prefrl.control.sac_optimizer.SACOptimizer`, which also offers ``relabel(reward_fn)`` (the loop
calls it after every reward round: :class:`Relabelling`) and ``pretrain_update(rollout)`` (PEBBLE); ``sb3-<algo>`` is a Stable-Baselines3
algorithm behind :class:`~prefrl.control.sb3.SB3Optimizer` (SB3 is imported only then).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from prefrl.control.rollout import Rollout

__all__ = ["PolicyOptimizer", "Relabelling", "build_optimizer"]


class PolicyOptimizer(Protocol):
    """What the preference loop needs from a policy optimiser."""

    envs: Any
    obs_space: Any
    action_space: Any
    global_step: int

    def collect(self, n_steps: int) -> Rollout: ...

    def update(self, rollout: Rollout, rewards: np.ndarray) -> dict[str, float]: ...

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...

    def evaluate(self, env_id: str, n_episodes: int = 10, seed: int = 0, **env_kwargs: Any) -> list[float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Relabelling(Protocol):
    """An off-policy optimiser whose stored rewards must follow the reward model (PEBBLE)."""

    def relabel(self, reward_fn: Any) -> None: ...

    def pretrain_update(self, rollout: Rollout) -> dict[str, float]: ...


def build_optimizer(cfg: Any, *, n_envs: int | None = None, seed: int | None = None) -> PolicyOptimizer:
    """The optimiser ``cfg.optimizer`` names, on ``n_envs`` (default ``cfg.n_envs``) envs seeded ``seed``."""
    n_envs = cfg.n_envs if n_envs is None else n_envs
    seed = cfg.seed if seed is None else seed
    env_kwargs = {"fixed_horizon": cfg.fixed_horizon, "drop_ctrl_cost": cfg.drop_ctrl_cost}
    if cfg.optimizer == "ppo":
        from prefrl.control.envs import make_vec_env
        from prefrl.control.ppo_agent import PPOAgent

        return PPOAgent(make_vec_env(cfg.env_id, n_envs, seed, **env_kwargs), cfg.ppo, seed, cnn=cfg.policy_cnn)
    if cfg.optimizer == "sac":
        from prefrl.control.envs import make_vec_env
        from prefrl.control.sac_optimizer import SACOptimizer

        return SACOptimizer(make_vec_env(cfg.env_id, n_envs, seed, **env_kwargs), cfg.sac, seed)
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise ValueError(
            f"optimizer {cfg.optimizer!r} needs stable-baselines3, which is not installed (pip install stable-baselines3)"
        ) from None
    from prefrl.control.sb3 import SB3Optimizer, sb3_algorithm

    return SB3Optimizer.from_control_config(cfg, sb3_algorithm(cfg.optimizer), n_envs=n_envs, seed=seed)
