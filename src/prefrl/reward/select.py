"""Query selection: which candidate pairs to show the teacher (Christiano et al. 2017, §2.2.4).

The paper samples many candidate pairs (10× the number of queries), predicts for each the
probability P_m[σ¹ ≻ σ²] under every ensemble member m, and asks about the pairs with the
highest variance of those predictions. The caller draws the candidates; a selector only
ranks them and returns the indices of the ``k`` it picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from prefrl.data.types import Segment
from prefrl.losses import preference_probability
from prefrl.reward.ensemble import RewardEnsemble

__all__ = [
    "Selector",
    "UniformSelector",
    "DisagreementSelector",
    "EntropySelector",
    "SELECTORS",
    "make_selector",
    "member_preference_probabilities",
    "segment_member_returns",
]


class Selector(Protocol):
    """Picks ``k`` of the candidate pairs; returns their indices (distinct, best first)."""

    name: str

    def select(
        self, candidates: Sequence[tuple[Segment, Segment]], k: int, ensemble: RewardEnsemble | None
    ) -> list[int]: ...


def _check_k(candidates: Sequence[tuple[Segment, Segment]], k: int) -> None:
    if not 0 <= k <= len(candidates):
        raise ValueError(f"k must be in [0, {len(candidates)}] (the number of candidates), got {k}")


def member_preference_probabilities(
    candidates: Sequence[tuple[Segment, Segment]], ensemble: RewardEnsemble
) -> np.ndarray:
    """P_m[left ≻ right] = σ(R̂_m(left) − R̂_m(right)) for every member m: → (M, C).

    Raw member returns (the scale the Bradley-Terry model was fit in); each distinct
    segment is evaluated once even when it appears in several candidates. A segment that
    carries ``member_rewards`` (the per-step member rewards the loop computed when it collected
    the segment, for the policy's reward) gets their sums instead of a second pass through the
    networks: its returns are those of the reward model at collection time (the loop drops a
    cache older than ``ControlConfig.score_reuse_rounds`` reward rounds before it asks).
    """
    index: dict[int, int] = {}
    segments: list[Segment] = []
    for pair in candidates:
        for seg in pair:
            if id(seg) not in index:
                index[id(seg)] = len(segments)
                segments.append(seg)
    returns = torch.from_numpy(segment_member_returns(segments, ensemble))  # (M, S)
    left = torch.tensor([index[id(p[0])] for p in candidates], dtype=torch.long)
    right = torch.tensor([index[id(p[1])] for p in candidates], dtype=torch.long)
    # ε = 0: the random-response floor rescales every probability alike and cannot change the ranking.
    probs = preference_probability(returns[:, left], returns[:, right], random_response=0.0)  # (M, C)
    return probs.numpy()


def segment_member_returns(segments: Sequence[Segment], ensemble: RewardEnsemble) -> np.ndarray:
    """Raw per-member returns of ``segments``, (M, S): cached ``member_rewards`` summed where a
    segment has them (from this ensemble's M members), the networks' pass for the others."""
    m = ensemble.n_members
    out = np.zeros((m, len(segments)), dtype=np.float32)
    todo = []
    for i, seg in enumerate(segments):
        cached = seg.member_rewards
        if cached is not None and cached.shape == (m, len(seg)):
            out[:, i] = cached.sum(axis=1)
        else:
            todo.append(i)
    if todo:
        out[:, todo] = ensemble.segments_member_returns([segments[i] for i in todo])
    return out


def _top_k(scores: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Indices of the k highest scores, ties broken at random."""
    tie_break = rng.random(scores.shape[0])
    order = np.lexsort((tie_break, -scores))  # primary key: −score
    return [int(i) for i in order[:k]]


class UniformSelector:
    """k candidates uniformly at random, without replacement (the paper's ablation baseline)."""

    name = "uniform"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def select(
        self, candidates: Sequence[tuple[Segment, Segment]], k: int, ensemble: RewardEnsemble | None = None
    ) -> list[int]:
        _check_k(candidates, k)
        return [int(i) for i in self.rng.choice(len(candidates), size=k, replace=False)]


class DisagreementSelector:
    """The k candidates with the highest variance over members of P_m[left ≻ right]."""

    name = "disagreement"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def scores(self, candidates: Sequence[tuple[Segment, Segment]], ensemble: RewardEnsemble) -> np.ndarray:
        """Var_m P_m[left ≻ right] for each candidate, (C,)."""
        return member_preference_probabilities(candidates, ensemble).var(axis=0)

    def select(
        self, candidates: Sequence[tuple[Segment, Segment]], k: int, ensemble: RewardEnsemble | None
    ) -> list[int]:
        _check_k(candidates, k)
        if ensemble is None:
            raise ValueError("the disagreement selector needs the reward ensemble")
        if k == 0:
            return []
        return _top_k(self.scores(candidates, ensemble), k, self.rng)


class EntropySelector:
    """The k candidates whose ensemble-mean preference p̄ is most uncertain: H(p̄) = −p̄ log p̄ − (1 − p̄) log(1 − p̄)."""

    name = "entropy"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def scores(self, candidates: Sequence[tuple[Segment, Segment]], ensemble: RewardEnsemble) -> np.ndarray:
        """Binary entropy of the member-mean preference probability for each candidate, (C,)."""
        p = member_preference_probabilities(candidates, ensemble).mean(axis=0).astype(np.float64)
        p = np.clip(p, 1e-12, 1.0 - 1e-12)
        return -(p * np.log(p) + (1.0 - p) * np.log1p(-p))

    def select(
        self, candidates: Sequence[tuple[Segment, Segment]], k: int, ensemble: RewardEnsemble | None
    ) -> list[int]:
        _check_k(candidates, k)
        if ensemble is None:
            raise ValueError("the entropy selector needs the reward ensemble")
        if k == 0:
            return []
        return _top_k(self.scores(candidates, ensemble), k, self.rng)


SELECTORS: dict[str, type[UniformSelector] | type[DisagreementSelector] | type[EntropySelector]] = {
    "uniform": UniformSelector,
    "disagreement": DisagreementSelector,
    "entropy": EntropySelector,
}


def make_selector(name: str, rng: np.random.Generator) -> UniformSelector | DisagreementSelector | EntropySelector:
    """Build a selector by name: ``uniform``, ``disagreement`` or ``entropy``."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    return SELECTORS[name](rng)
