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


def _slope_t(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its t statistic (slope / standard error; ±inf on an exact line)."""
    xm = x - x.mean()
    sxx = float((xm**2).sum())
    if sxx == 0.0:
        return 0.0, 0.0
    slope = float((xm * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * xm
    se = math.sqrt(float((resid**2).sum()) / max(len(x) - 2, 1) / sxx)
    if se == 0.0:
        return slope, math.copysign(math.inf, slope) if slope else 0.0
    return slope, slope / se


def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t of mean(b) − mean(a) (±inf when both are constant and differ)."""
    diff = float(b.mean() - a.mean())
    se = math.sqrt(float(a.var(ddof=1)) / len(a) + float(b.var(ddof=1)) / len(b))
    if se == 0.0:
        return math.copysign(math.inf, diff) if diff else 0.0
    return diff / se


@dataclass
class GoldProxyMonitor:
    """Tracks gold and proxy reward during optimisation and says when the proxy's gains stop being real.

    ``record`` one point per step: the batch means, and optionally the per-sample proxy and
    gold scores. Two readings, logged every step by the LM trainers:

    - **slopes** over the last ``window`` points, each with its t statistic
      (``objective/proxy_slope_t``, ``objective/gold_slope_t``): a step's batch mean is noisy, so
      a slope's sign alone says little;
    - **transfer** (``objective/gold_transfer``): the gold gained since the first ``window``
      points, over the gold the proxy's gain *should* have bought, by the per-sample
      least-squares slope of gold on proxy in those first points (what selecting on the proxy
      gains at the start: regressional Goodhart's baseline). 1: the gains are what the start's
      proxy–gold relation predicts; near 0: the proxy rises and the gold does not follow
      (the reward model is being exploited); below 0: the gold falls. Reported only once the
      proxy's gain is significant (Welch t ≥ ``t_min`` between the first and the last window)
      and the start's slope is positive; ``objective/gold_proxy_corr0`` is the start's
      per-sample correlation (a proxy that never tracked gold cannot transfer).

    ``diverging()`` (``objective/gold_proxy_diverging``, warned once) is true when the transfer
    is below ``min_transfer`` (the proxy's gain since the start is significant and less than
    that share of it reached the gold), or when, over the last window, the proxy rises and the
    gold falls, both significantly (slope t ≥ ``t_min`` and ≤ −``t_min``).
    """

    window: int = 10
    t_min: float = 2.0
    min_transfer: float = 0.25
    steps: list[float] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    #: Per-sample (proxy, gold) pairs of the first ``window`` points: the start's relation.
    start_proxy: list[float] = field(default_factory=list)
    start_gold: list[float] = field(default_factory=list)
    warned: bool = False

    def record(
        self,
        step: float,
        proxy: float,
        gold: float,
        kl: float = float("nan"),
        proxy_samples: Sequence[float] | None = None,
        gold_samples: Sequence[float] | None = None,
    ) -> bool:
        """Add a point; returns True (and warns once) when gold and proxy diverge."""
        self.steps.append(float(step))
        self.proxy.append(float(proxy))
        self.gold.append(float(gold))
        self.kl.append(float(kl))
        if proxy_samples is not None and gold_samples is not None and len(self.steps) <= self.window:
            if len(proxy_samples) != len(gold_samples):
                raise ValueError(f"{len(proxy_samples)} proxy samples but {len(gold_samples)} gold samples")
            self.start_proxy.extend(float(v) for v in proxy_samples)
            self.start_gold.extend(float(v) for v in gold_samples)
        diverging = self.diverging()
        if diverging and not self.warned:
            transfer = self.transfer()
            why = (
                f"{transfer:.2f} of the gold its gain predicts reached the gold reward"
                if transfer < self.min_transfer
                else f"over the last {self.window} steps the gold reward falls"
            )
            warnings.warn(
                f"overoptimisation at step {step:g}: the proxy reward rises but {why}",
                RuntimeWarning,
                stacklevel=2,
            )
            self.warned = True
        return diverging

    def slopes(self) -> tuple[float, float]:
        """t statistics of the proxy's and the gold's slopes over the last ``window`` points (NaN before)."""
        if len(self.steps) < max(self.window, 3):
            return float("nan"), float("nan")
        x = np.asarray(self.steps[-self.window :])
        return (
            _slope_t(x, np.asarray(self.proxy[-self.window :]))[1],
            _slope_t(x, np.asarray(self.gold[-self.window :]))[1],
        )

    def start_corr(self) -> float:
        """Per-sample correlation of proxy and gold over the first ``window`` points (NaN if unknown)."""
        if len(self.start_proxy) < 3:
            return float("nan")
        p, g = np.asarray(self.start_proxy), np.asarray(self.start_gold)
        if p.std() == 0 or g.std() == 0:
            return float("nan")
        return float(np.corrcoef(p, g)[0, 1])

    def transfer(self) -> float:
        """Gold gained since the first window over the gold the proxy's gain predicts (NaN until defined)."""
        w = self.window
        if len(self.steps) < 2 * w or len(self.start_proxy) < 3:
            return float("nan")
        first_p, last_p = np.asarray(self.proxy[:w]), np.asarray(self.proxy[-w:])
        if _welch_t(first_p, last_p) < self.t_min:
            return float("nan")
        p = np.asarray(self.start_proxy)
        slope0 = _slope_t(p, np.asarray(self.start_gold))[0]
        if slope0 <= 0:
            return float("nan")
        gold_gain = float(np.mean(self.gold[-w:]) - np.mean(self.gold[:w]))
        return gold_gain / (slope0 * float(last_p.mean() - first_p.mean()))

    def diverging(self) -> bool:
        t_proxy, t_gold = self.slopes()
        return bool(self.transfer() < self.min_transfer or (t_proxy >= self.t_min and t_gold <= -self.t_min))

    def metrics(self) -> dict[str, float]:
        """The readings above, under the names the LM trainers log (those not yet defined left out)."""
        t_proxy, t_gold = self.slopes()
        out = {
            "objective/proxy_slope_t": t_proxy,
            "objective/gold_slope_t": t_gold,
            "objective/gold_transfer": self.transfer(),
            "objective/gold_proxy_corr0": self.start_corr(),
            "objective/gold_proxy_diverging": float(self.diverging()),
        }
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def state_dict(self) -> dict[str, object]:
        """Everything recorded, for a checkpoint (a resumed run keeps its start's calibration)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def load_state_dict(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            if name in self.__dataclass_fields__:
                setattr(self, name, value)

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
