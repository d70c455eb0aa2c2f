"""SURF (Park et al. 2022): pseudo-labels for confident unlabelled pairs, and temporal cropping of segments.

Two ways to get more out of few labels when fitting the reward ensemble:

- **Pseudo-labels** (SURF §4.1, after FixMatch): for pairs nobody labelled, the ensemble's mean
  preference probability P[σ¹ ≻ σ²] = mean_m σ(R̂ᵐ(σ¹) − R̂ᵐ(σ²)) gives μ̂ = 1 if P > ½ else 0, kept
  only where the ensemble is confident, max(P, 1 − P) > τ.
- **Temporal cropping** (SURF §4.2): a labelled pair (σ¹, σ², μ) becomes (crop(σ¹), crop(σ²), μ) with
  a random length H' ∈ [min_len, max_len] and nearby random starts, on the premise that a preference
  over whole segments mostly holds over most of their length too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from prefrl.data.types import Segment
from prefrl.losses import preference_probability

__all__ = ["pseudo_labels", "ensemble_preference_probability", "pseudo_label_pairs", "crop_segment",
           "temporal_crop", "surf_pairs"]

Pair = tuple[Segment, Segment, float]


class SegmentScorer(Protocol):
    """What pseudo-labelling needs of a reward ensemble (``RewardEnsemble`` has it)."""

    def segments_member_returns(self, segments: Sequence[Segment]) -> np.ndarray: ...


def pseudo_labels(p_left: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (K,) of the pairs with max(P, 1 − P) > τ, and their μ̂ (K,) = 1.0 where P > ½ else 0.0.

    ``p_left`` (M,) is P[left ≻ right] per pair; τ = ``threshold`` in [0.5, 1).
    """
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0.5, 1), got {threshold}")
    p_left = np.asarray(p_left, dtype=np.float64)
    if p_left.ndim != 1:
        raise ValueError(f"p_left must have shape (M,), got {p_left.shape}")
    keep = np.flatnonzero(np.maximum(p_left, 1.0 - p_left) > threshold)
    return keep, (p_left[keep] > 0.5).astype(np.float64)


def ensemble_preference_probability(ensemble: SegmentScorer, pairs: Sequence[tuple[Segment, Segment]]) -> np.ndarray:
    """mean_m σ(R̂ᵐ(left) − R̂ᵐ(right)) per pair (M,): the ensemble's probability that the left segment is preferred."""
    if not pairs:
        return np.zeros(0)
    returns = ensemble.segments_member_returns([s for pair in pairs for s in pair[:2]])  # (members, 2M)
    returns = torch.as_tensor(np.asarray(returns), dtype=torch.float64)
    p = preference_probability(returns[:, 0::2], returns[:, 1::2], random_response=0.0)  # (members, M)
    return p.mean(dim=0).numpy()


def pseudo_label_pairs(
    ensemble: SegmentScorer, unlabelled: Sequence[tuple[Segment, Segment]], threshold: float
) -> list[Pair]:
    """(left, right, μ̂) for the unlabelled pairs the ensemble is confident about (see :func:`pseudo_labels`)."""
    keep, mu = pseudo_labels(ensemble_preference_probability(ensemble, unlabelled), threshold)
    return [(unlabelled[i][0], unlabelled[i][1], float(m)) for i, m in zip(keep, mu)]


def crop_segment(segment: Segment, start: int, length: int) -> Segment:
    """Steps [start, start + length) of a segment; every per-step field is cut alike, the rest kept."""
    if not (start >= 0 and length >= 1 and start + length <= len(segment)):
        raise ValueError(f"crop [{start}, {start + length}) outside a segment of length {len(segment)}")
    window = slice(start, start + length)

    def cut(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.asarray(x)[window]

    return dataclasses.replace(
        segment, obs=cut(segment.obs), actions=cut(segment.actions), true_rewards=cut(segment.true_rewards),
        sim_states=cut(segment.sim_states), start_step=segment.start_step + start, id=None,
        meta={**segment.meta, "cropped_from": segment.id, "crop_start": start},
    )


def temporal_crop(
    pairs: Sequence[Pair], min_len: int, max_len: int, rng: np.random.Generator, max_shift: int = 0
) -> list[Pair]:
    """SURF's temporal cropping: each (σ¹, σ², μ) → (σ¹[k₀ : k₀ + H'], σ²[k₁ : k₁ + H'], μ).

    H' is drawn uniformly from [min_len, max_len] per pair (capped at the shorter segment), k₀
    uniformly from the valid starts, and k₁ within ``max_shift`` steps of k₀ (SURF's Δ); the
    order of the pair and μ are kept.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 ≤ min_len ≤ max_len, got {min_len}, {max_len}")
    out = []
    for left, right, mu in pairs:
        shortest = min(len(left), len(right))
        length = int(rng.integers(min(min_len, shortest), min(max_len, shortest) + 1))
        k0 = int(rng.integers(0, len(left) - length + 1))
        lo, hi = max(0, k0 - max_shift), min(len(right) - length, k0 + max_shift)
        k1 = int(rng.integers(lo, hi + 1)) if lo <= hi else int(rng.integers(0, len(right) - length + 1))
        out.append((crop_segment(left, k0, length), crop_segment(right, k1, length), mu))
    return out


def surf_pairs(
    labelled: Sequence[Pair],
    unlabelled: Sequence[tuple[Segment, Segment]],
    ensemble: SegmentScorer,
    rng: np.random.Generator,
    threshold: float | None = None,
    crop_fraction: float | None = None,
) -> list[Pair]:
    """The extra pairs of one SURF reward round: pseudo-labels (τ = ``threshold``) and crops of the labelled pairs.

    Crops are between ``crop_fraction`` of the shorter segment and all of it, with the two starts at
    most a tenth of a segment apart. Either part is off when its argument is None.
    """
    extra: list[Pair] = []
    if threshold is not None and unlabelled:
        extra += pseudo_label_pairs(ensemble, unlabelled, threshold)
    if crop_fraction is not None and labelled:
        shortest = min(min(len(a), len(b)) for a, b, _ in labelled)
        min_len = max(1, int(np.ceil(crop_fraction * shortest)))
        extra += temporal_crop(labelled, min_len, shortest, rng, max_shift=max(1, shortest // 10))
    return extra
