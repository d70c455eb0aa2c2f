"""Configuration of DPO / IPO / cDPO (``prefrl lm dpo``): :class:`DPOConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.train_config import TrainArgs
from prefrl.names import DPOLossType, check_choice
from prefrl.utils.config import doc

__all__ = ["DPOConfig"]


@dataclass
class DPOConfig(TrainArgs):
    """DPO / IPO / cDPO on preference pairs."""

    data: str = doc("Preference data file/directory (prompt/chosen/rejected).", default="")
    ref_model: str | None = doc(
        "Reference model; default: the starting model (LoRA: adapter disabled).", default=None
    )
    beta: float = doc("The implicit KL penalty's strength β (the pull towards the reference).", default=0.1)
    loss_type: DPOLossType = doc(
        "'sigmoid' (DPO; cDPO with label_smoothing) or 'ipo' (Azar et al. 2023).", default="sigmoid"
    )
    label_smoothing: float = doc("Assumed label-noise rate; > 0 gives conservative DPO (cDPO).", default=0.0)
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)
    learning_rate: float = doc("Peak AdamW learning rate.", default=5e-7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: give a preference file")
        check_choice("loss_type", self.loss_type, DPOLossType)
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
