"""prefrl.reward: the learned reward ensemble, its trainer, query selection and the label schedule."""

from prefrl.reward.ensemble import RewardEnsemble, stack_segments
from prefrl.reward.schedule import LabelSchedule
from prefrl.reward.select import DisagreementSelector, EntropySelector, UniformSelector, make_selector
from prefrl.reward.trainer import RewardTrainer, RewardTrainerConfig

__all__ = [
    "RewardEnsemble",
    "RewardTrainer",
    "RewardTrainerConfig",
    "LabelSchedule",
    "UniformSelector",
    "DisagreementSelector",
    "EntropySelector",
    "make_selector",
    "stack_segments",
]
