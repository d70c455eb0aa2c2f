"""Configuration of reward-model training (``prefrl lm rm``): :class:`RMConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.train_config import TrainArgs
from prefrl.utils.config import doc

__all__ = ["RMConfig"]


@dataclass
class RMConfig(TrainArgs):
    """Bradley-Terry reward-model training on preference pairs."""

    data: str | None = doc("Preference data file/directory (prompt/chosen/rejected).", default=None)
    store: str | None = doc(
        "PreferenceStore URL or SQLite path: train on people's answered text pairs.", default=None
    )
    n_heads: int = doc("Ensemble heads sharing the backbone (forward returns their mean).", default=1)
    margin: float = doc(
        "Margin m subtracted from r_chosen − r_rejected inside the loss (Llama 2).", default=0.0
    )
    center_rewards_coef: float = doc(
        "Weight c of the centring term c·mean((r_c + r_r)²); 0 disables.", default=0.0
    )
    normalize: bool = doc(
        "After training, normalise scores of the training responses to mean 0, std 1.", default=True
    )
    norm_samples: int = doc("Responses used for the normalisation statistics.", default=256)
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)
    learning_rate: float = doc("Peak AdamW learning rate.", default=1e-5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.data is None) == (self.store is None):
            raise ValueError("give exactly one of data or store")
        if self.n_heads < 1:
            raise ValueError(f"n_heads must be ≥ 1, got {self.n_heads}")
        if self.center_rewards_coef < 0:
            raise ValueError(f"center_rewards_coef must be ≥ 0, got {self.center_rewards_coef}")
        if self.norm_samples < 2:
            raise ValueError(f"norm_samples must be ≥ 2, got {self.norm_samples}")
