"""Language-model RLHF: models, data, SFT, reward model, DPO, PPO, best-of-n.

Submodules are imported on demand (``from prefrl.lm.reward_model import RewardModel``)
so that ``import prefrl.lm`` stays cheap.
"""

__all__ = ["models", "data", "common", "reward_model", "sft", "rm_trainer", "dpo", "best_of_n"]
