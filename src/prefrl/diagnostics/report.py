"""Plots and tables for the reward-hacking instruments: KL position profiles, metric curves, Markdown tables.

Shared by the examples that ask "did it work, or did it hack?" (e.g. the silent-teacher
experiment). Plots use matplotlib's Agg backend (no display needed) and return the path
they wrote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_kl_profiles", "plot_metric_curves", "markdown_table", "format_value"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kl_profiles(
    profiles: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    title: str = "Per-token KL by response position",
    max_positions: int | None = None,
) -> Path:
    """Plot each run's mean per-token KL at every response position (one line per run).

    Args:
        profiles: run name → (T,) profile from :func:`prefrl.diagnostics.kl_profile.kl_position_profile`.
        path: the PNG to write.
        max_positions: draw only the first this many positions (None = all).
    """
    if not profiles:
        raise ValueError("profiles is empty: give at least one run's profile")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, prof in profiles.items():
        y = np.asarray(prof, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"profile {name!r} must be 1-D (T,), got shape {y.shape}")
        if max_positions is not None:
            y = y[:max_positions]
        ax.plot(np.arange(y.size), y, "-o", ms=2.5, label=name)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xlabel("response token position t")
    ax.set_ylabel("mean KL_t (nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str],
    path: str | Path,
    x_key: str = "step",
    title: str | None = None,
) -> Path:
    """One panel per metric key, one line per run, against ``x_key`` (default: the PPO step).

    Args:
        histories: run name → list of per-step metric dicts.
        keys: the metrics to draw; a run lacking a key in a row skips that point.
        path: the PNG to write.
    """
    if not histories:
        raise ValueError("histories is empty: give at least one run")
    if not keys:
        raise ValueError("keys is empty: name at least one metric to plot")
    plt = _pyplot()
    n = len(keys)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for k, key in enumerate(keys):
        ax = axes[k // cols][k % cols]
        for name, hist in histories.items():
            pts = [
                (float(r.get(x_key, i + 1)), float(r[key]))
                for i, r in enumerate(hist)
                if r.get(key) is not None and not math.isnan(float(r[key]))
            ]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, "-", lw=1.2, label=name)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, None/NaN as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(float(value)):
            return "–"
        return f"{float(value):.{digits}g}"
    return str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    headers: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """A GitHub Markdown table of ``rows`` (dicts) restricted to ``columns``; missing cells are '–'."""
    if not columns:
        raise ValueError("columns is empty")
    if headers is not None and len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} names but there are {len(columns)} columns")
    head = list(headers) if headers is not None else list(columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"
