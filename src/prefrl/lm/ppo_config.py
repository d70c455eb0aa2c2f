"""Configuration of PPO for language models (InstructGPT; Ziegler et al. 2019).

One typed dataclass; every field is documented next to itself and validated in
``__post_init__`` so that a bad value fails when the config is built, not at step 500.
Defaults follow "The N+ implementation details of RLHF with PPO" (Huang et al. 2024)
scaled down for a 135M model on CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, get_args

from prefrl.losses import KLEstimator
from prefrl.rl.kl import KLControl

__all__ = ["LMPPOConfig"]


@dataclass
class LMPPOConfig:
    """Hyper-parameters of :class:`prefrl.lm.ppo.LMPPOTrainer`."""

    # --- rollout -------------------------------------------------------------------------
    batch_size: int = 16
    """Prompts per PPO step (one response each)."""
    max_new_tokens: int = 48
    """Longest response; generation stops earlier at the EOS token."""
    temperature: float = 0.7
    """Sampling temperature; log-probabilities are computed from logits / temperature too
    (N+ details #16), so the ratio is that of the distribution actually sampled."""
    top_k: int = 0
    """0 = no top-k filtering (the sampling distribution must match the scored one)."""
    max_prompt_length: int = 64
    """Prompts are left-truncated to this many tokens."""
    forward_batch_size: int = 16
    """Rows per no-grad forward pass when scoring rollouts (memory knob only)."""

    # --- reward shaping ------------------------------------------------------------------
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimator used in the penalty and the logs: k1 (−log r), k2, k3 (Schulman 2020)."""
    kl_control: KLControl = "fixed"
    """KL coefficient controller: fixed, adaptive (Ziegler et al. 2019) or budget (dual ascent)."""
    kl_coef: float = 0.05
    """Initial KL coefficient β in r_t = score·[t = EOS] − β·KL_t."""
    kl_target: float = 6.0
    """Target sequence-summed KL (nats) for the adaptive / budget controllers."""
    kl_horizon: int = 10_000
    """Horizon of the adaptive controller (Ziegler et al. 2019)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of a response that never emits EOS (None = no penalty)."""
    score_clip: float | None = None
    """Clip sequence scores to ±score_clip before shaping (None = no clip)."""

    # --- advantage estimation ------------------------------------------------------------
    gamma: float = 1.0
    """Discount over response tokens (1 in InstructGPT)."""
    gae_lambda: float = 0.95
    """GAE λ."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the valid tokens of the batch."""

    # --- optimisation ---------------------------------------------------------------------
    ppo_epochs: int = 4
    """Passes over each batch of rollouts."""
    mini_batch_size: int = 8
    """Rows per gradient step; must divide batch_size."""
    clip_coef: float = 0.2
    """PPO ratio clip ε."""
    value_clip_coef: float | None = 0.2
    """Value clip (None = unclipped value loss)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    learning_rate: float = 3e-6
    """Adam learning rate of the policy."""
    critic_learning_rate: float | None = None
    """Adam learning rate of the critic (None = learning_rate)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (by global norm, per model)."""
    adam_eps: float = 1e-5
    """Adam ε (N+ details)."""

    # --- bookkeeping -----------------------------------------------------------------------
    seed: int = 0
    """Seeds the trainer's own generators (sampling, minibatch order)."""

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_new_tokens", "max_prompt_length", "forward_batch_size", "ppo_epochs", "mini_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if self.kl_estimator not in get_args(KLEstimator):
            raise ValueError(f"kl_estimator must be one of {get_args(KLEstimator)}, got {self.kl_estimator!r}")
        if self.kl_control not in get_args(KLControl):
            raise ValueError(f"kl_control must be one of {get_args(KLControl)}, got {self.kl_control!r}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be ≥ 0, got {self.kl_coef}")
        if self.kl_target <= 0 or self.kl_horizon <= 0:
            raise ValueError("kl_target and kl_horizon must be positive")
        if self.score_clip is not None and self.score_clip <= 0:
            raise ValueError(f"score_clip must be positive or None, got {self.score_clip}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError(f"gamma and gae_lambda must lie in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if self.clip_coef <= 0:
            raise ValueError(f"clip_coef must be positive, got {self.clip_coef}")
        if self.value_clip_coef is not None and self.value_clip_coef <= 0:
            raise ValueError(f"value_clip_coef must be positive or None, got {self.value_clip_coef}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be ≥ 0, got {self.vf_coef}")
        for name in ("learning_rate", "max_grad_norm", "adam_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.critic_learning_rate is not None and self.critic_learning_rate <= 0:
            raise ValueError(f"critic_learning_rate must be positive or None, got {self.critic_learning_rate}")

    @property
    def critic_lr(self) -> float:
        """The critic's learning rate after defaulting."""
        return self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate

    @property
    def n_minibatches(self) -> int:
        """Gradient steps per epoch."""
        return self.batch_size // self.mini_batch_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMPPOConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LMPPOConfig fields: {sorted(unknown)}")
        return cls(**d)

