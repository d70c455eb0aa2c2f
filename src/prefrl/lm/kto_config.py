"""Configuration of KTO (``prefrl lm kto``): :class:`KTOConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.train_config import TrainArgs
from prefrl.utils.config import doc

__all__ = ["KTOConfig"]


@dataclass
class KTOConfig(TrainArgs):
    """KTO (Ethayarajh et al. 2024) on unpaired feedback: one response marked desirable or not."""

    data: str = doc(
        "Unpaired feedback file/directory in TRL's format: prompt, completion, label (true = desirable).", default=""
    )
    ref_model: str | None = doc(
        "Reference model; default: the starting model (LoRA: adapter disabled).", default=None
    )
    beta: float = doc("β: the pull towards the reference (as in DPO).", default=0.1)
    desirable_weight: float = doc(
        "λ_D, weight of desirable examples' loss (raise it when they are fewer; the paper keeps "
        "λ_D·n_D / (λ_U·n_U) in [1, 4/3]).",
        default=1.0,
    )
    undesirable_weight: float = doc("λ_U, weight of undesirable examples' loss.", default=1.0)
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)
    learning_rate: float = doc("Peak AdamW learning rate.", default=5e-7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: give an unpaired feedback file (prompt, completion, label)")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.desirable_weight < 0 or self.undesirable_weight < 0:
            raise ValueError("desirable_weight and undesirable_weight must be ≥ 0")
