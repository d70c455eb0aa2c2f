"""Synthetic teachers that answer from the hidden true reward (B-Pref, Lee et al. 2021).

One parametrised teacher covers the six B-Pref kinds; ``make_teacher`` builds the named
presets and accepts overrides, so kinds combine (e.g. a myopic teacher that also makes
mistakes). Following B-Pref's ``get_label``, an answer is decided in this order:

1. *skip*: both undiscounted returns below ``skip_threshold`` → ``None`` (incomparable);
2. *choice* on the (possibly myopic) returns R̃ⁱ = Σ_t γ^(T−1−t)·r_t: rational
   (μ = 1 if R̃¹ > R̃², 0 if <, 0.5 if equal) when ``beta`` is ``None``, else
   Bradley-Terry: left with probability σ(β·(R̃¹ − R̃²)), sampled;
3. *mistake*: the choice flipped with probability ε (0.5 stays 0.5);
4. *equal*: |R¹ − R²| < ``equal_threshold`` on the undiscounted returns → 0.5.

B-Pref scales the skip and equal thresholds to the env's returns. A fixed number cannot fit every
env (a skip threshold of 0 is above every Pendulum segment return, so that teacher skipped every
query, issue #13), so the ``skip`` and ``equal`` presets give them relative to the spread of the
segment returns the teacher has seen so far (running mean m and standard deviation s over both
sides of every pair it was asked): skip when both returns are below m + ``skip_spread``·s, equal
when |R¹ − R²| < ``equal_spread``·s. An absolute ``skip_threshold`` / ``equal_threshold`` given
to :func:`make_teacher` replaces the preset's relative one.

``answer_returns`` works on returns alone, so text pairs with a gold score use the same
code (a myopic discount needs per-step rewards and so applies in ``answer`` only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from prefrl.data.types import Segment

__all__ = ["SyntheticTeacher", "TEACHER_PRESETS", "make_teacher", "segment_true_rewards"]


@dataclass
class SyntheticTeacher:
    """A B-Pref simulated teacher. Use :func:`make_teacher` for the named kinds."""

    rng: np.random.Generator = field(repr=False)
    """Source of all randomness (stochastic choices, mistakes)."""
    name: str = "rational"
    """Recorded with each comparison as the teacher's name."""
    beta: float | None = None
    """Rationality β of the Bradley-Terry choice; ``None`` = perfectly rational (β → ∞)."""
    gamma: float = 1.0
    """Myopic discount γ ∈ (0, 1]: step t of a T-step segment weighs γ^(T−1−t), so the end counts most."""
    epsilon: float = 0.0
    """Probability ε ∈ [0, 1] of flipping the chosen side (a mistake)."""
    skip_threshold: float | None = None
    """Skip (answer ``None``) when both returns are below this; ``None`` never skips."""
    equal_threshold: float = 0.0
    """Answer 0.5 when |R¹ − R²| < this; 0 leaves only exact ties (rational) as equal."""
    skip_spread: float | None = None
    """Skip when both returns are below m + this·s (running mean and std of the returns seen); ``None``: off."""
    equal_spread: float | None = None
    """Answer 0.5 when |R¹ − R²| < this·s (running std of the returns seen); ``None``: off."""
    _stats: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], init=False, repr=False, compare=False)
    """Running count, mean and sum of squared deviations of the segment returns seen (Welford)."""

    compares: ClassVar[str] = "segments"
    """Answers segment pairs (text pairs with gold scores go through :meth:`answer_returns`)."""

    @property
    def lease_as(self) -> str:
        """The labeller it answers the store's queue as: ``synthetic-<name>``."""
        return f"synthetic-{self.name}"

    def __post_init__(self) -> None:
        if not isinstance(self.rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator, got {type(self.rng).__name__}")
        for name in ("beta", "gamma", "epsilon", "skip_threshold", "equal_threshold", "skip_spread", "equal_spread"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.beta is not None and not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a positive finite number or None (rational), got {self.beta}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not self.equal_threshold >= 0.0:
            raise ValueError(f"equal_threshold must be ≥ 0, got {self.equal_threshold}")
        if self.skip_threshold is not None and math.isnan(self.skip_threshold):
            raise ValueError("skip_threshold must be a number or None, got NaN")

    def answer(self, pairs: Sequence[tuple[Segment, Segment]]) -> list[float | None]:
        """μ for each (left, right) pair from the segments' hidden ``true_rewards``."""
        return self.answer_rewards(
            [(segment_true_rewards(left, "left"), segment_true_rewards(right, "right")) for left, right in pairs]
        )

    def answer_rewards(self, rewards: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float | None]:
        """μ for each pair of per-step reward arrays ((T,) left, (T,) right), e.g. a judge's per-step scores."""
        if not rewards:
            return []
        returns_left = np.array([r_l.sum() for r_l, _ in rewards])
        returns_right = np.array([r_r.sum() for _, r_r in rewards])
        if self.gamma == 1.0:
            return self._answer(returns_left, returns_right, returns_left, returns_right)
        myopic_left = np.array([_discounted_sum(r_l, self.gamma) for r_l, _ in rewards])
        myopic_right = np.array([_discounted_sum(r_r, self.gamma) for _, r_r in rewards])
        return self._answer(returns_left, returns_right, myopic_left, myopic_right)

    def answer_returns(self, returns_left: np.ndarray, returns_right: np.ndarray) -> list[float | None]:
        """μ for each pair of returns (R¹_i, R²_i), e.g. gold scores of two responses."""
        r_l = np.asarray(returns_left, dtype=np.float64)
        r_r = np.asarray(returns_right, dtype=np.float64)
        if r_l.ndim != 1 or r_l.shape != r_r.shape:
            raise ValueError(
                f"returns_left and returns_right must be 1-D of equal length, got {r_l.shape} and {r_r.shape}"
            )
        return self._answer(r_l, r_r, r_l, r_r)

    def _answer(
        self, r_l: np.ndarray, r_r: np.ndarray, choice_l: np.ndarray, choice_r: np.ndarray
    ) -> list[float | None]:
        """Decide μ from undiscounted returns (skip, equal) and choice returns (rational/stochastic)."""
        for name, arr in (("returns_left", r_l), ("returns_right", r_r)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")
        n = r_l.shape[0]
        skip_threshold, equal_threshold = self._thresholds(np.concatenate([r_l, r_r]))
        delta = choice_l - choice_r  # (n,)
        if self.beta is None:
            mu = np.where(delta > 0, 1.0, np.where(delta < 0, 0.0, 0.5))
        else:
            # σ(βΔ) written with tanh so that βΔ of ±1e4 stays finite.
            p_left = 0.5 * (1.0 + np.tanh(0.5 * self.beta * delta))
            mu = (self.rng.random(n) < p_left).astype(np.float64)
        if self.epsilon > 0:
            flip = self.rng.random(n) < self.epsilon
            mu = np.where(flip, 1.0 - mu, mu)  # 0.5 stays 0.5
        if equal_threshold > 0:
            mu = np.where(np.abs(r_l - r_r) < equal_threshold, 0.5, mu)
        answers: list[float | None] = [float(m) for m in mu]
        if skip_threshold is not None:
            skip = np.maximum(r_l, r_r) < skip_threshold
            answers = [None if s else a for s, a in zip(skip, answers)]
        return answers

    def _thresholds(self, returns: np.ndarray) -> tuple[float | None, float]:
        """(skip, equal) thresholds for this batch: absolute, or relative to the returns seen (this batch included)."""
        count, mean, m2 = self._stats
        for x in returns.astype(np.float64):  # Welford: exact and stable over a long run
            count += 1.0
            d = x - mean
            mean += d / count
            m2 += d * (x - mean)
        self._stats = [count, mean, m2]
        spread = math.sqrt(m2 / count) if count > 0 else 0.0
        skip = self.skip_threshold
        if skip is None and self.skip_spread is not None:
            skip = mean + self.skip_spread * spread
        equal = self.equal_threshold
        if equal <= 0 and self.equal_spread is not None:
            equal = self.equal_spread * spread
        return skip, equal

    def state_dict(self) -> dict[str, Any]:
        """The running return statistics (the rng is saved by its owner)."""
        return {"stats": list(self._stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stats = [float(x) for x in state["stats"]]


def segment_true_rewards(segment: Segment, side: str = "segment") -> np.ndarray:
    """The hidden (T,) rewards of a segment; ``ValueError`` when it has none."""
    if segment.true_rewards is None:
        raise ValueError(f"{side} segment has no true_rewards; a synthetic teacher needs the hidden reward")
    rewards = np.asarray(segment.true_rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"{side} segment's true_rewards must be (T,), got shape {rewards.shape}")
    return rewards


def _discounted_sum(rewards: np.ndarray, gamma: float) -> float:
    """Σ_t γ^(T−1−t)·r_t: the last step weighs 1, the first γ^(T−1)."""
    weights = gamma ** np.arange(rewards.shape[0] - 1, -1, -1, dtype=np.float64)
    return float(np.dot(weights, rewards))


#: The B-Pref kinds and their default parameters (Lee et al. 2021, §4 uses β = 1, γ = 0.9, ε = 0.1).
#: Skip and equal are relative to the spread of the returns seen: for independent segments with
#: normal returns about 10 % of the queries are skipped (both below m − s/2) and 28 % are equal
#: (|ΔR| < s/2), whatever the env's reward scale. The pairs the ensemble picks by disagreement are
#: rarely near-ties, so the equal rate a run sees is lower (s/4 gave none of 40 on Pendulum).
TEACHER_PRESETS: dict[str, dict[str, Any]] = {
    "rational": {},
    "stochastic": {"beta": 1.0},
    "myopic": {"gamma": 0.9},
    "skip": {"skip_spread": -0.5},
    "equal": {"equal_spread": 0.5},
    "mistake": {"epsilon": 0.1},
}


def make_teacher(name: str, rng: np.random.Generator, **kwargs: Any) -> SyntheticTeacher:
    """Build the named synthetic teacher; ``kwargs`` override or add parameters.

    Example: ``make_teacher("mistake", rng, epsilon=0.2, gamma=0.95)``.
    """
    if name not in TEACHER_PRESETS:
        raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHER_PRESETS)}")
    allowed = {"beta", "gamma", "epsilon", "skip_threshold", "equal_threshold", "skip_spread", "equal_spread"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"unknown teacher parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    params = {**TEACHER_PRESETS[name], **kwargs}
    for absolute, relative in (("skip_threshold", "skip_spread"), ("equal_threshold", "equal_spread")):
        if absolute in kwargs and relative not in kwargs:
            params.pop(relative, None)  # an absolute threshold replaces the preset's relative one
    return SyntheticTeacher(rng=rng, name=name, **params)
