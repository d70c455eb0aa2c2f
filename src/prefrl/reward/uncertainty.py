"""What to optimise when the reward is an ensemble: the mean, the worst case, or mean − λ·std.

Coste et al. 2023 ("Reward Model Ensembles Help Mitigate Overoptimization") report that
optimising the worst case (WCO) or the uncertainty-weighted mean (UWO) of an ensemble
practically eliminates overoptimisation for best-of-n. The ensemble's spread on the
policy's own samples is also the signal worth logging.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["Aggregation", "aggregate_members", "disagreement"]

Aggregation = Literal["mean", "min", "mean_minus_std"]


def aggregate_members(member_scores: torch.Tensor, how: Aggregation = "mean", lam: float = 1.0) -> torch.Tensor:
    """Combine (M, …) member scores into one score per item.

    - ``"mean"``: the ensemble mean.
    - ``"min"``: the worst case over members (WCO).
    - ``"mean_minus_std"``: mean − λ·std (UWO).
    """
    if member_scores.dim() < 1 or member_scores.shape[0] < 1:
        raise ValueError("member_scores must have a leading member axis")
    if how == "mean":
        return member_scores.mean(0)
    if how == "min":
        return member_scores.min(0).values
    if how == "mean_minus_std":
        if lam < 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        std = member_scores.std(0, unbiased=False) if member_scores.shape[0] > 1 else torch.zeros_like(member_scores[0])
        return member_scores.mean(0) - lam * std
    raise ValueError(f"unknown aggregation {how!r}; choose 'mean', 'min' or 'mean_minus_std'")


def disagreement(member_scores: torch.Tensor) -> torch.Tensor:
    """Standard deviation across members, per item: (…)."""
    if member_scores.shape[0] < 2:
        return torch.zeros_like(member_scores[0])
    return member_scores.std(0, unbiased=False)
