"""Configuration of the critic-free LM RL methods: GRPO, RLOO and REINFORCE++.

``CriticFreeConfig`` adds to the knobs every on-policy LM trainer shares
(:class:`prefrl.lm.rl_config.LMRLConfig`: rollout, KL estimator and where it acts, KL control,
clipped updates) the three choices these methods turn on: the advantage estimator (``algo``),
the completions per prompt (``num_generations``) and how the per-token loss is reduced
(``loss_aggregation``: the length bias users of these methods ask about). ``CriticFreeRunConfig``
adds what ``prefrl lm rl`` needs to build the policy and reward model from files. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.rl_config import LMRLConfig, LMRunFields
from prefrl.names import CriticFreeAlgo, LossAggregation, check_choice
from prefrl.utils.config import doc

__all__ = ["CriticFreeConfig", "CriticFreeRunConfig"]


@dataclass
class CriticFreeConfig(LMRLConfig):
    """Hyper-parameters of :class:`prefrl.lm.critic_free.CriticFreeTrainer` (k responses per prompt, no critic)."""

    algo: CriticFreeAlgo = doc(
        "Advantage estimator, no critic: 'grpo' (reward minus its group's mean, over the group's std; "
        "Shao et al. 2024), 'rloo' (reward minus the mean of the other k − 1; Ahmadian et al. 2024), "
        "'reinforce++' (per-token returns whitened over the whole batch, the batch mean as baseline; Hu et al. 2025).",
        default="grpo",
    )
    num_generations: int = doc(
        "Completions k sampled per prompt (a group); a step trains on batch_size × k responses. "
        "grpo needs ≥ 2 to be informative, rloo ≥ 2, reinforce++ any.",
        default=4,
    )
    loss_aggregation: LossAggregation = doc(
        "How the per-token clipped loss is reduced: 'token-mean' (every token weighs the same; DAPO), "
        "'sequence-mean' (mean per response, then over responses; GRPO's paper: short responses' tokens weigh "
        "more) or 'constant' (sum / (responses × loss_normaliser); Dr. GRPO: no length bias from the normaliser).",
        default="token-mean",
    )
    loss_normaliser: float | None = doc(
        "The constant of loss_aggregation='constant' (None = max_new_tokens).", default=None
    )
    scale_rewards: bool = doc(
        "grpo: divide by the group's reward std (False = Dr. GRPO's unscaled group-relative advantage).",
        default=True,
    )

    def __post_init__(self) -> None:
        check_choice("algo", self.algo, CriticFreeAlgo)
        check_choice("loss_aggregation", self.loss_aggregation, LossAggregation)
        k = self.num_generations
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"num_generations must be a positive integer, got {k!r}")
        if self.algo in ("grpo", "rloo") and k < 2:
            raise ValueError(f"algo={self.algo!r} compares completions of one prompt: num_generations must be ≥ 2, got {k}")
        if self.loss_normaliser is not None and not self.loss_normaliser > 0:
            raise ValueError(f"loss_normaliser must be positive or None, got {self.loss_normaliser!r}")
        super().__post_init__()

    @property
    def rows_per_step(self) -> int:
        """Responses per step: batch_size prompts × num_generations."""
        return self.batch_size * self.num_generations

    @property
    def _rows_label(self) -> str:
        return "batch_size × num_generations"

    @property
    def normaliser(self) -> float:
        """The constant of ``loss_aggregation='constant'`` after defaulting."""
        return float(self.max_new_tokens if self.loss_normaliser is None else self.loss_normaliser)


@dataclass
class CriticFreeRunConfig(CriticFreeConfig, LMRunFields):
    """GRPO / RLOO / REINFORCE++ from files: policy, reward model (frozen), prompts; no critic."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_run_fields()

    def trainer_config(self) -> CriticFreeConfig:
        """The trainer's hyper-parameters alone."""
        return CriticFreeConfig(**{k: getattr(self, k) for k in CriticFreeConfig.__dataclass_fields__})
