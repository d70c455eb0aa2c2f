"""Language-model RLHF: SFT → reward model → PPO or DPO, and best-of-n.

One config/trainer pair per stage (``<stage>_config.py`` is torch-free, for the CLI):
``sft``, ``reward_model_trainer`` (trains :class:`~prefrl.lm.reward_model.RewardModel`, the
network), ``dpo``, ``ppo`` (with ``rollout`` for sampling and ``ppo_checkpoint``),
``best_of_n`` and ``generate`` (CLI sampling, scoring, queueing pairs). Shared parts:
``models`` (loading, LoRA), ``data`` (files), ``encoding`` (tokens, padding, masks, packed
pairs), ``logprobs``, ``training`` (the SFT/RM/DPO loop), ``reward_functions`` (what PPO
optimises: a reward model, VADER, a text or token function), ``support``.

Submodules are imported on demand (``from prefrl.lm.reward_model import RewardModel``)
so that ``import prefrl.lm`` stays cheap.
"""

__all__ = [
    "models",
    "data",
    "encoding",
    "logprobs",
    "training",
    "reward_model",
    "reward_functions",
    "sft",
    "reward_model_trainer",
    "dpo",
    "ppo",
    "rollout",
    "best_of_n",
    "generate",
]
