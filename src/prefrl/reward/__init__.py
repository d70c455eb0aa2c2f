"""prefrl.reward: the learned reward ensemble, its trainer, query selection and the label schedule.

Names are imported on first use, so that ``prefrl.reward.trainer_config`` (torch-free) can be
imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "RewardEnsemble": "ensemble",
    "stack_segments": "ensemble",
    "LabelSchedule": "schedule",
    "UniformSelector": "select",
    "DisagreementSelector": "select",
    "EntropySelector": "select",
    "make_selector": "select",
    "RewardTrainer": "trainer",
    "RewardTrainerConfig": "trainer_config",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"prefrl.reward.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
