"""The one metrics sink: TensorBoard scalars, a JSONL file and a progress bar behind one call.

Every trainer (control loop, SFT, reward model, DPO, PPO) logs through :class:`MetricsSink`, so
the three outputs agree and there is one NaN policy: a non-finite value is written to JSONL as
``null`` and skipped in TensorBoard (which cannot plot it), never dropped from the in-memory
history. Non-main processes of a data-parallel run pass ``enabled=False``: they keep the history
(so functions return the same thing on every rank) and write nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsSink", "mean_metrics", "jsonable"]


def jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with non-finite floats as ``None`` (JSON has no NaN)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out


def mean_metrics(rows: list[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts; NaNs and keys missing from a row are skipped for it."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if k in r and not math.isnan(float(r[k]))]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


class MetricsSink:
    """TensorBoard + JSONL + progress bar; :meth:`log` writes one row to all three.

    Args:
        tensorboard_dir: directory for TensorBoard event files (``None``: none).
        jsonl_path: file to append one JSON object per :meth:`log` call to (``None``: none).
        total: length of the progress bar (``None``: no bar).
        desc: the bar's label.
        initial: where the bar starts (a resumed run).
        unit: the bar's unit (``"step"``, ``"env step"``, …).
        enabled: False on non-main processes: keep :attr:`history`, write nothing.
        postfix: metric keys shown on the bar (default: the first four of each row).
    """

    def __init__(
        self,
        tensorboard_dir: str | Path | None = None,
        jsonl_path: str | Path | None = None,
        *,
        total: int | None = None,
        desc: str = "train",
        initial: int = 0,
        unit: str = "step",
        enabled: bool = True,
        postfix: tuple[str, ...] | None = None,
    ) -> None:
        self.enabled = enabled
        self.history: list[dict[str, float]] = []
        self.postfix = postfix
        self.writer = None
        self.bar = None
        self._shown: dict[str, str] = {}  # what the bar shows after the last row
        self.jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        if not enabled:
            return
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir))
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        if total is not None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def log(self, metrics: Mapping[str, float], step: int, advance: int = 1, **bar_extra: str) -> dict[str, float]:
        """Record ``metrics`` at ``step``, move the bar by ``advance``; return the row as stored.

        ``bar_extra`` are extra strings for the bar only (e.g. ``labels="12/700"``).
        """
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items() if k != "step"}}
        self.history.append(row)
        if not self.enabled:
            return row
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if self.jsonl_path is not None:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(jsonable(row)) + "\n")
        if self.bar is not None:
            keys = self.postfix if self.postfix is not None else [k for k in row if k != "step"][:4]
            shown = {k.split("/")[-1]: f"{row[k]:.3g}" for k in keys if k in row}
            shown.update(bar_extra)
            self._shown = shown
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(advance)
        return row

    def note(self, **bar_extra: str) -> None:
        """Show ``bar_extra`` on the bar now, beside the last row's values (e.g. ``waiting="3"`` while a
        step waits for people); the next :meth:`log` replaces them."""
        if self.bar is not None:
            self.bar.set_postfix({**self._shown, **bar_extra})

    def scalar(self, key: str, value: float, step: int) -> None:
        """One extra TensorBoard scalar outside a row (e.g. an episode return at its own step)."""
        if self.enabled and self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
