"""SAC hyper-parameters, torch-free (so ``--help`` and config checks never import torch).

Names and defaults follow cleanrl's ``sac_continuous_action.py`` (and SB3's SAC where cleanrl has
no knob); :class:`SACConfig` is read by :class:`prefrl.rl.sac.SACAgent` and :func:`prefrl.rl.sac.run_sac`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.utils.config import doc

__all__ = ["SACConfig"]


@dataclass
class SACConfig:
    """Soft actor-critic (Haarnoja et al. 2018) with twin Q, polyak target networks and automatic temperature."""

    buffer_size: int = doc("Replay buffer capacity in transitions (oldest overwritten first).", default=1_000_000)
    batch_size: int = doc("Transitions per gradient step.", default=256)
    learning_starts: int = doc("Env steps taken with uniform random actions before the first update.", default=5000)
    gamma: float = doc("Discount factor γ.", default=0.99)
    tau: float = doc("Polyak coefficient τ of the target networks: θ̄ ← τ·θ + (1 − τ)·θ̄.", default=0.005)
    policy_lr: float = doc("Adam learning rate of the policy (and of the temperature).", default=3e-4)
    q_lr: float = doc("Adam learning rate of the twin Q networks.", default=1e-3)
    policy_frequency: int = doc("Critic steps per policy step (delayed policy update, TD3-style).", default=2)
    target_network_frequency: int = doc("Critic steps between two polyak updates of the targets.", default=1)
    updates_per_step: int = doc("Gradient steps per env step (the update-to-data ratio).", default=1)
    hidden: tuple[int, ...] = doc("Hidden widths of the policy and Q MLPs.", default=(256, 256))
    alpha: float = doc("Initial entropy temperature α (the fixed one when autotune is off).", default=0.2)
    autotune: bool = doc("Tune α to keep the policy's entropy near target_entropy (Haarnoja et al. 2018b).",
                         default=True)
    target_entropy_scale: float = doc("Target entropy H̄ = −target_entropy_scale · dim(A).", default=1.0)

    def __post_init__(self) -> None:
        for name in ("buffer_size", "batch_size", "policy_frequency", "target_network_frequency",
                     "updates_per_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"learning_starts must be a non-negative integer, got {self.learning_starts!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau!r}")
        for name in ("policy_lr", "q_lr", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden must be non-empty positive widths, got {self.hidden!r}")
