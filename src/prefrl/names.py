"""The names that configs take, as ``Literal`` types (torch-free, imports nothing).

Configs type their name-valued fields with these, so an unknown name fails when the config is
built and the CLI offers exactly these choices (:func:`prefrl.cli.options.literal_choices`).
:mod:`prefrl.losses` and the trainers use the same aliases, so a name has one spelling.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "KLEstimator",
    "KLPenalty",
    "KLControl",
    "DPOLossType",
    "SelectorName",
    "TeacherName",
    "OptimizerName",
    "CriticFreeAlgo",
    "LossAggregation",
    "PolicyCNN",
    "OnlineTeacher",
    "DPOReference",
    "check_choice",
]

KLEstimator = Literal["k1", "k2", "k3"]
"""Schulman (2020)'s estimators of KL(π‖π_ref) from samples of π: k1 = log r, k2 = ½(log r)², k3 = (r−1) − log r."""
KLPenalty = Literal["reward", "loss"]
"""Where the KL penalty acts: per-token in the reward (InstructGPT) or as a loss term (GRPO)."""
KLControl = Literal["fixed", "adaptive", "budget"]
"""How β moves: fixed, adaptive (Ziegler et al. 2019), or dual ascent on a sequence-KL budget."""
DPOLossType = Literal["sigmoid", "ipo"]
"""DPO's loss: ``sigmoid`` (Rafailov et al. 2023; cDPO with label smoothing) or ``ipo`` (Azar et al. 2023)."""
SelectorName = Literal["disagreement", "entropy", "uniform"]
"""How queries are chosen from candidate pairs."""
TeacherName = Literal["rational", "stochastic", "myopic", "skip", "equal", "mistake", "human", "judge"]
"""Who answers: a B-Pref synthetic teacher kind, people in the web app, or the user's ``judge`` function."""
OptimizerName = Literal["ppo", "sac", "sb3-ppo", "sb3-a2c", "sb3-sac", "sb3-td3", "sb3-ddpg"]
"""The control loop's policy optimiser: our PPO or SAC, or a Stable-Baselines3 algorithm (``sb3-<algo>``)."""
CriticFreeAlgo = Literal["grpo", "rloo", "reinforce++"]
"""The critic-free LM RL methods: group-relative (GRPO), leave-one-out (RLOO), batch baseline (REINFORCE++)."""
LossAggregation = Literal["token-mean", "sequence-mean", "constant"]
"""How a per-token policy loss is reduced: over all tokens, per response then over responses, or Σ / constant (Dr. GRPO)."""
OnlineTeacher = Literal["reward-model", "judge", "human"]
"""Who answers online DPO's fresh pairs: a frozen reward model, an AI judge, or people in the web app (through the store)."""
DPOReference = Literal["initial", "previous"]
"""Online DPO's reference: the starting policy throughout, or the policy that sampled the round (the previous round's)."""

PolicyCNN = Literal["a3c", "nature"]
"""The policy's torso for image observations: A3C's (Mnih et al. 2013/2016, what Christiano et al. 2017 used) or DQN's Nature CNN."""


def check_choice(field: str, value: object, choices: object) -> None:
    """ValueError naming ``field`` unless ``value`` is one of the ``Literal`` ``choices``."""
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
