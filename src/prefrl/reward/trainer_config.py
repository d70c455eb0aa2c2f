"""``RewardTrainerConfig``: the reward trainer's hyper-parameters, torch-free (``--help`` never imports torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RewardTrainerConfig"]


@dataclass
class RewardTrainerConfig:
    """Hyperparameters of the reward trainer (defaults from Christiano et al. 2017, App. A)."""

    lr: float = 3e-4
    """Adam learning rate."""
    epochs: int = 50
    """Passes over each member's bootstrap resample per call of ``train`` (one round)."""
    batch_size: int = 64
    """Comparisons per minibatch and member."""
    steps_per_round: int | None = None
    """Minibatch steps per round instead of ``epochs`` passes over the data: a round then costs the same however many comparisons are stored (the Atari preset). None: ``epochs``."""
    initial_steps: int | None = None
    """With ``steps_per_round``: minibatch steps of the first round (on the labels asked up front, before the policy trains). None: ``steps_per_round``."""
    frames_per_segment: int | None = None
    """With ``steps_per_round``: train on this many random steps of each segment, its return estimated as (length / k) × their sum (unbiased); losses, accuracy and normalisation still use every step. None: every step."""
    eval_pairs: int | None = None
    """Most comparisons of each split (train, val) a round measures its losses, accuracy and truth metrics on, drawn afresh each round. None: all of them."""
    val_fraction: float = 1.0 / math.e
    """Fraction of the comparisons held out for validation (the paper: 1/e), shared by all members."""
    l2: float = 1e-4
    """Initial L2 coefficient on the networks' weights (sum of squares, added to each member's loss)."""
    adaptive_l2: bool = True
    """Adapt the L2 coefficient after each epoch to keep val loss within [l2_ratio_low, l2_ratio_high] × train loss."""
    l2_ratio_low: float = 1.1
    """Below this val/train loss ratio the model underfits: L2 is divided by ``l2_factor``."""
    l2_ratio_high: float = 1.5
    """Above this val/train loss ratio the model overfits: L2 is multiplied by ``l2_factor``."""
    l2_factor: float = 1.5
    """Multiplicative step of the adaptive L2 coefficient."""
    l2_min: float = 1e-8
    """Lower bound of the adaptive L2 coefficient."""
    l2_max: float = 1.0
    """Upper bound of the adaptive L2 coefficient."""
    random_response: float = 0.1
    """ε: the teacher answers uniformly at random with this probability (the paper: 0.1)."""
    bootstrap: bool = True
    """Train each member on its own bootstrap resample (with replacement) of the training split."""
    eval_every: int = 5
    """Evaluate train/val loss (and adapt L2, report progress) every this many epochs and after the last."""
    normalisation_segments: int = 1000
    """After training, renormalise the members over the steps of the last this-many segments (0: don't)."""
    seed: int = 0
    """Seeds the trainer's numpy generator when none is passed (splits, bootstrap, shuffling)."""

    def __post_init__(self) -> None:
        checks = {
            "lr": self.lr > 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "val_fraction": 0.0 <= self.val_fraction < 1.0,
            "l2": self.l2 >= 0,
            "l2_ratio_low": 0 < self.l2_ratio_low < self.l2_ratio_high,
            "l2_factor": self.l2_factor > 1.0,
            "l2_min": 0 <= self.l2_min <= self.l2_max,
            "random_response": 0.0 <= self.random_response < 1.0,
            "normalisation_segments": self.normalisation_segments >= 0,
            "steps_per_round": self.steps_per_round is None or self.steps_per_round >= 1,
            "initial_steps": self.initial_steps is None or self.initial_steps >= 1,
            "frames_per_segment": self.frames_per_segment is None or self.frames_per_segment >= 1,
            "eval_pairs": self.eval_pairs is None or self.eval_pairs >= 1,
            "eval_every": self.eval_every >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid RewardTrainerConfig.{name} = {getattr(self, name)!r}")
