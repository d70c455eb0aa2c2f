"""How many labels are due by a given environment step (Christiano et al. 2017, App. A).

A fraction of the budget is asked before training starts (the paper: 25 % for MuJoCo);
afterwards labels arrive at a rate proportional to t0 / (t0 + T) at step T (the paper:
t0 = 2·10⁶ for MuJoCo, 5·10⁶ for Atari), so early steps, where the reward changes most,
get more labels. Integrating the rate,

    labels_due(T) = n₀ + (N − n₀) · ln(1 + T/t0) / ln(1 + S/t0),

with N = ``total_labels``, n₀ = round(``initial_fraction``·N) and S = ``total_steps``: the
normalisation makes exactly N labels due at step S. The paper's t0 is absolute; for runs
of any length we default to t0 = S/5 (so the rate at the end is 1/6 of the initial one).
"""

from __future__ import annotations

import math

__all__ = ["LabelSchedule"]


class LabelSchedule:
    """Cumulative number of labels due by step T; monotone, n₀ at T = 0, ``total_labels`` from ``total_steps`` on.

    Args:
        total_labels: N, the labelling budget of the whole run.
        total_steps: S, the run's environment steps.
        initial_fraction: share of N due at step 0 (before any policy training).
        t0: time constant of the decaying rate t0/(t0 + T); default S/5.
    """

    def __init__(
        self, total_labels: int, total_steps: int, initial_fraction: float = 0.25, t0: float | None = None
    ) -> None:
        if int(total_labels) != total_labels or total_labels < 0:
            raise ValueError(f"total_labels must be a non-negative integer, got {total_labels}")
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps}")
        if not 0.0 <= initial_fraction <= 1.0:
            raise ValueError(f"initial_fraction must be in [0, 1], got {initial_fraction}")
        if t0 is not None and not (t0 > 0 and math.isfinite(t0)):
            raise ValueError(f"t0 must be positive, got {t0}")
        self.total_labels = int(total_labels)
        self.total_steps = int(total_steps)
        self.initial_fraction = float(initial_fraction)
        self.t0 = float(t0) if t0 is not None else self.total_steps / 5.0
        self.initial_labels = int(round(self.initial_fraction * self.total_labels))
        self._log_total = math.log1p(self.total_steps / self.t0)

    def rate(self, step: float) -> float:
        """Labels per step at step T after the initial batch: (N − n₀)·(1/t0)/(1 + T/t0)/ln(1 + S/t0)."""
        if step >= self.total_steps:
            return 0.0
        return (self.total_labels - self.initial_labels) / (self.t0 + step) / self._log_total

    def labels_due(self, step: int) -> int:
        """Labels that should have been asked by environment step ``step`` (cumulative)."""
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        if step >= self.total_steps:
            return self.total_labels
        fraction = math.log1p(step / self.t0) / self._log_total  # in [0, 1)
        return self.initial_labels + math.floor((self.total_labels - self.initial_labels) * fraction)

    def __repr__(self) -> str:
        return (
            f"LabelSchedule(total_labels={self.total_labels}, total_steps={self.total_steps}, "
            f"initial_fraction={self.initial_fraction}, t0={self.t0})"
        )
