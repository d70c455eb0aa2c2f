"""KL coefficient controllers: fixed, adaptive (Ziegler et al. 2019) and a sequence-level budget.

All three share one interface: ``value`` is the current coefficient β, and
``update(kl_seq, n_steps)`` is called once per batch with the observed mean
*sequence-summed* KL (nats per episode / response) and the number of samples in
the batch. Cohen et al. 2024 ("RL, but don't do anything I wouldn't do") argue the
sequence total, not the per-token mean, is the quantity worth controlling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class KLController(Protocol):
    value: float

    def update(self, kl_seq: float, n_steps: int) -> float: ...


@dataclass
class FixedKLController:
    """β stays at its initial value."""

    value: float = 0.05

    def update(self, kl_seq: float, n_steps: int) -> float:
        return self.value


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2.

    e = clip((KL − target)/target, −0.2, 0.2);  β ← β·(1 + K_β·e·n/horizon)
    """

    value: float = 0.05
    target: float = 6.0
    horizon: int = 10_000
    k_beta: float = 0.1

    def __post_init__(self) -> None:
        if self.target <= 0 or self.horizon <= 0:
            raise ValueError("target and horizon must be positive")

    def update(self, kl_seq: float, n_steps: int) -> float:
        error = min(max((kl_seq - self.target) / self.target, -0.2), 0.2)
        self.value *= 1.0 + self.k_beta * error * n_steps / self.horizon
        return self.value


@dataclass
class BudgetKLController:
    """A per-sequence KL budget enforced by a Lagrange multiplier (dual ascent).

    The constrained problem max E[R] s.t. E[KL_seq] ≤ budget has the Lagrangian
    E[R] − β·(E[KL_seq] − budget); dual ascent on β (projected to β ≥ 0) is
    β ← max(0, β + lr·(KL_seq − budget)/budget). Unlike the adaptive controller the
    step is not clipped and β can reach 0 when the policy is under budget, so the
    mean per-sequence KL converges to the budget rather than to a neighbourhood of it.
    """

    value: float = 0.05
    budget: float = 6.0
    lr: float = 0.05

    def __post_init__(self) -> None:
        if self.budget <= 0 or self.lr <= 0:
            raise ValueError("budget and lr must be positive")

    def update(self, kl_seq: float, n_steps: int) -> float:
        self.value = max(0.0, self.value + self.lr * (kl_seq - self.budget) / self.budget)
        return self.value


KLControl = Literal["fixed", "adaptive", "budget"]


def make_kl_controller(kind: KLControl, init: float, target: float, horizon: int = 10_000) -> KLController:
    """Build a controller by name (fails at config time for an unknown name)."""
    if kind == "fixed":
        return FixedKLController(init)
    if kind == "adaptive":
        return AdaptiveKLController(init, target=target, horizon=horizon)
    if kind == "budget":
        return BudgetKLController(init, budget=target)
    raise ValueError(f"unknown KL control {kind!r}; choose 'fixed', 'adaptive' or 'budget'")
