"""Configuration of PPO for language models (InstructGPT; Ziegler et al. 2019).

``LMPPOConfig`` holds the trainer's hyper-parameters: the rollout, KL and clipped-update knobs
every on-policy LM trainer shares (:class:`prefrl.lm.rl_config.LMRLConfig`) plus the critic's
and GAE's. The knobs PPO has in both families carry the control agent's (cleanrl's) names:
``learning_rate``, ``update_epochs``, ``minibatch_size``, ``clip_coef``, ``clip_vloss``,
``vf_coef``, ``ent_coef``, ``max_grad_norm``, ``gamma``, ``gae_lambda``, ``target_kl`` (old CLI
spellings such as ``--ppo-epochs`` still work, deprecated). ``PPORunConfig`` adds what the
``prefrl lm ppo`` command needs to build the four models. Every field is documented next
to itself (``metadata["help"]``, which becomes the CLI's ``--help``) and validated in
``__post_init__`` so that a bad value fails when the config is built, not at step 500.
Torch-free, so that ``prefrl lm --help`` stays instant.
Defaults follow "The N+ implementation details of RLHF with PPO" (Huang et al. 2024)
scaled down for a 135M model on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefrl.lm.rl_config import LMRLConfig, LMRunFields
from prefrl.utils.config import doc

__all__ = ["LMPPOConfig", "PPORunConfig"]


@dataclass
class LMPPOConfig(LMRLConfig):
    """Hyper-parameters of :class:`prefrl.lm.ppo.LMPPOTrainer` (one response per prompt)."""

    # --- advantage estimation ------------------------------------------------------------
    gamma: float = doc("Discount over response tokens (1 in InstructGPT).", default=1.0)
    gae_lambda: float = doc("GAE λ.", default=0.95)
    whiten_advantages: bool = doc(
        "Normalise advantages to mean 0, std 1 over the valid tokens of the batch.", default=True
    )

    # --- the critic ------------------------------------------------------------------------
    clip_vloss: bool = doc("Clip the value change to ±clip_coef around the rollout's values.", default=True)
    vf_coef: float = doc("Weight of the value loss.", default=0.1)
    critic_learning_rate: float | None = doc(
        "Adam learning rate of the critic (None = learning_rate).", default=None
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic_learning_rate is not None and self.critic_learning_rate <= 0:
            raise ValueError(
                f"critic_learning_rate must be positive or None, got {self.critic_learning_rate}"
            )

    @property
    def critic_lr(self) -> float:
        """The critic's learning rate after defaulting."""
        return self.learning_rate if self.critic_learning_rate is None else self.critic_learning_rate

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMPPOConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (names of earlier releases are renamed)."""
        d = dict(d)
        for old, new in (("ppo_epochs", "update_epochs"), ("mini_batch_size", "minibatch_size")):
            if old in d:
                d[new] = d.pop(old)
        if "value_clip_coef" in d:
            d["clip_vloss"] = d.pop("value_clip_coef") is not None
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LMPPOConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class PPORunConfig(LMPPOConfig, LMRunFields):
    """PPO-RLHF from files: policy, reward model (frozen), critic (from the RM), prompts."""

    critic: str | None = doc(
        "Critic directory (a RewardModel); default: initialised from the reward model.", default=None
    )
    output_dir: str = doc(
        "Where checkpoints (checkpoints/step-N, with policy/, critic/, trainer_state.pt reachable at the top) "
        "and metrics.jsonl go.",
        default="runs/ppo",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_run_fields()

    def trainer_config(self) -> LMPPOConfig:
        """The trainer's hyper-parameters alone."""
        return LMPPOConfig(**{k: getattr(self, k) for k in LMPPOConfig.__dataclass_fields__})
