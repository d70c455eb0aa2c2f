"""Gold vs proxy reward: overoptimisation curves and their fits (Gao, Schulman & Hilton 2022).

As a policy moves away from its start (distance d = √KL(π ‖ π_ref)), the *proxy* reward
it optimises keeps rising while the *gold* reward rises, peaks and falls. Gao et al. fit

- best-of-n:  R_bon(d) = d·(α − β·d)        peak at d* = α / (2β)
- RL:         R_RL(d)  = d·(α − β·log d)    peak at d* = exp(α/β − 1)

to the gold reward relative to the start (R(0) = 0). Best-of-n has an analytic KL,
KL_bon(n) = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "bon_kl",
    "best_of_n_values",
    "GaoFit",
    "fit_gao",
    "GoldProxyMonitor",
    "plot_gold_vs_proxy",
]


def bon_kl(n: int | np.ndarray) -> np.ndarray | float:
    """Analytic KL of best-of-n sampling from its base policy: log n − (n − 1)/n."""
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(n_arr < 1):
        raise ValueError("n must be ≥ 1")
    out = np.log(n_arr) - (n_arr - 1.0) / n_arr
    return float(out) if np.ndim(out) == 0 else out


def best_of_n_values(selector: np.ndarray, value: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """Expected ``value`` of the sample that maximises ``selector`` among n draws, for each n.

    Exact (no Monte Carlo): with N samples per prompt sorted by selector, the sample of
    rank i (1-based, ascending) is the maximum of a uniformly random n-subset with
    probability C(i−1, n−1)/C(N, n). Averaged over prompts.

    Args:
        selector: (P, N) scores used to pick the best (e.g. the proxy reward).
        value: (P, N) what is measured at the pick (e.g. the gold reward).
        ns: values of n, each ≤ N.

    Returns:
        (len(ns),) expected values.
    """
    selector = np.atleast_2d(np.asarray(selector, dtype=np.float64))
    value = np.atleast_2d(np.asarray(value, dtype=np.float64))
    if selector.shape != value.shape:
        raise ValueError(f"selector has shape {selector.shape} but value has shape {value.shape}")
    n_samples = selector.shape[1]
    order = np.argsort(selector, axis=1, kind="stable")
    sorted_value = np.take_along_axis(value, order, axis=1)  # (P, N) ascending by selector
    out = []
    for n in ns:
        if not 1 <= n <= n_samples:
            raise ValueError(f"n={n} must lie in [1, {n_samples}]")
        # log C(i-1, n-1) - log C(N, n) for i = 1..N
        i = np.arange(1, n_samples + 1)
        with np.errstate(invalid="ignore"):
            log_w = np.array(
                [_log_comb(k - 1, n - 1) for k in i], dtype=np.float64
            ) - _log_comb(n_samples, n)
        w = np.where(i >= n, np.exp(log_w), 0.0)
        out.append(float((sorted_value @ w).mean()))
    return np.asarray(out)


def _log_comb(a: int, b: int) -> float:
    if b < 0 or b > a:
        return -math.inf
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


@dataclass(frozen=True)
class GaoFit:
    """A fitted gold-reward curve R(d) relative to R(0)."""

    kind: Literal["bon", "rl"]
    alpha: float
    beta: float

    def __call__(self, d: np.ndarray | float) -> np.ndarray:
        d = np.asarray(d, dtype=np.float64)
        if self.kind == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (self.alpha - self.beta * np.log(np.maximum(d, 1e-300))), 0.0)

    @property
    def peak(self) -> float:
        """d* where the fitted gold reward is highest (inf when the fit never turns down)."""
        if self.beta <= 0:
            return math.inf
        if self.kind == "bon":
            return self.alpha / (2.0 * self.beta)
        return math.exp(self.alpha / self.beta - 1.0)


def fit_gao(d: np.ndarray, gold: np.ndarray, kind: Literal["bon", "rl"] = "bon", gold_at_zero: float | None = None) -> GaoFit:
    """Least-squares fit of Gao et al.'s functional form to gold reward vs d = √KL.

    Both forms are linear in (α, β), so the fit is exact least squares. ``gold_at_zero``
    is R(0), subtracted first; by default the gold value at the smallest d when that d is 0.
    """
    d = np.asarray(d, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if d.shape != gold.shape or d.ndim != 1:
        raise ValueError(f"d and gold must be 1-D of equal length, got {d.shape} and {gold.shape}")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be non-negative")
    if gold_at_zero is None:
        gold_at_zero = float(gold[np.argmin(d)]) if np.min(d) == 0 else 0.0
    y = gold - gold_at_zero
    if kind == "bon":
        design = np.stack([d, -(d**2)], axis=1)
    elif kind == "rl":
        design = np.stack([d, -d * np.log(np.maximum(d, 1e-300))], axis=1)
    else:
        raise ValueError(f"unknown fit kind {kind!r}; choose 'bon' or 'rl'")
    keep = d > 0
    if keep.sum() < 2:
        raise ValueError("need at least two points with d > 0 to fit")
    (alpha, beta), *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
    return GaoFit(kind, float(alpha), float(beta))


@dataclass
class GoldProxyMonitor:
    """Tracks gold and proxy reward during optimisation and warns when they diverge.

    ``record`` a point per step; ``diverging()`` is true when, over the last ``window``
    points, the proxy's least-squares slope is positive while the gold's is negative —
    the signature of reward hacking.
    """

    window: int = 10
    steps: list[float] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    warned: bool = False

    def record(self, step: float, proxy: float, gold: float, kl: float = float("nan")) -> bool:
        """Add a point; returns True (and warns once) when gold and proxy diverge."""
        self.steps.append(float(step))
        self.proxy.append(float(proxy))
        self.gold.append(float(gold))
        self.kl.append(float(kl))
        diverging = self.diverging()
        if diverging and not self.warned:
            warnings.warn(
                f"overoptimisation: over the last {self.window} points the proxy reward rises "
                f"while the gold reward falls (step {step:g})",
                RuntimeWarning,
                stacklevel=2,
            )
            self.warned = True
        return diverging

    def diverging(self) -> bool:
        if len(self.steps) < max(self.window, 3):
            return False
        x = np.asarray(self.steps[-self.window :])
        slope_proxy = np.polyfit(x, np.asarray(self.proxy[-self.window :]), 1)[0]
        slope_gold = np.polyfit(x, np.asarray(self.gold[-self.window :]), 1)[0]
        return bool(slope_proxy > 0 and slope_gold < 0)

    def as_dict(self) -> dict[str, list[float]]:
        return {"steps": self.steps, "gold": self.gold, "proxy": self.proxy, "kl": self.kl}


def plot_gold_vs_proxy(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: str | Path,
    fits: dict[str, GaoFit] | None = None,
    title: str = "Gold vs proxy reward",
) -> Path:
    """Plot gold (solid) and proxy (dashed) reward against d = √KL for several methods.

    Args:
        curves: name → (d, gold, proxy) arrays.
        path: PNG to write.
        fits: optional name → fitted gold curve, drawn dotted with its peak marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, (d, gold, proxy)) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(d, gold, "-o", color=color, ms=3, label=f"{name}: gold")
        ax.plot(d, proxy, "--", color=color, alpha=0.7, label=f"{name}: proxy")
        if fits and name in fits:
            fit = fits[name]
            grid = np.linspace(0, max(np.max(d), 1e-6) * 1.05, 200)
            base = float(np.asarray(gold)[np.argmin(d)])
            ax.plot(grid, fit(grid) + base, ":", color=color, label=f"{name}: {fit.kind} fit")
            if math.isfinite(fit.peak) and fit.peak <= grid[-1]:
                ax.axvline(fit.peak, color=color, lw=0.8, alpha=0.5)
    ax.set_xlabel("d = √KL(π ‖ π_ref)  [√nats]")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
