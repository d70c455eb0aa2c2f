"""prefrl.reward: the learned reward ensemble, its trainer, query selection and the label schedule."""

from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.trainer import RewardTrainer, RewardTrainerConfig

__all__ = ["RewardEnsemble", "RewardTrainer", "RewardTrainerConfig"]
