"""LabelSchedule: initial batch, rate ∝ t0/(t0 + T), exactly total_labels at the end, monotone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrl.reward.schedule import LabelSchedule


def test_hand_computed_values() -> None:
    s = LabelSchedule(total_labels=1000, total_steps=1000, initial_fraction=0.25, t0=200)
    assert s.labels_due(0) == 250
    # 250 + floor(750 · ln(2)/ln(6)) = 250 + floor(290.14) = 540.
    assert s.labels_due(200) == 540
    assert s.labels_due(999) == 250 + math.floor(750 * math.log1p(999 / 200) / math.log(6))
    assert s.labels_due(1000) == 1000
    assert s.labels_due(10**9) == 1000


def test_default_t0_is_a_fifth_of_the_run() -> None:
    s = LabelSchedule(700, 50_000)
    assert s.t0 == 10_000
    assert s.labels_due(0) == 175


@pytest.mark.parametrize("labels,steps,frac", [(1400, 1_000_000, 0.25), (7, 13, 0.5), (1, 100, 0.0), (0, 10, 0.25)])
def test_monotone_and_exact_at_the_end(labels: int, steps: int, frac: float) -> None:
    s = LabelSchedule(labels, steps, initial_fraction=frac)
    grid = np.unique(np.linspace(0, steps, 2001).astype(int))
    due = np.array([s.labels_due(int(t)) for t in grid])
    assert np.all(np.diff(due) >= 0)
    assert due[0] == round(frac * labels) and due[-1] == labels


def test_rate_decays_like_t0_over_t0_plus_t() -> None:
    s = LabelSchedule(100_000, 10_000_000, initial_fraction=0.25, t0=2_000_000)
    # Labels asked in a window of 100k steps, early vs late: ratio ≈ (t0 + T_late)/(t0 + T_early).
    early = s.labels_due(100_000) - s.labels_due(0)
    late = s.labels_due(8_100_000) - s.labels_due(8_000_000)
    assert early / late == pytest.approx((2e6 + 8.05e6) / (2e6 + 0.05e6), rel=0.02)
    assert s.rate(0) / s.rate(2_000_000) == pytest.approx(2.0)
    assert s.rate(10_000_000) == 0.0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="total_labels"):
        LabelSchedule(-1, 10)
    with pytest.raises(ValueError, match="total_steps"):
        LabelSchedule(10, 0)
    with pytest.raises(ValueError, match="initial_fraction"):
        LabelSchedule(10, 10, initial_fraction=1.5)
    with pytest.raises(ValueError, match="t0"):
        LabelSchedule(10, 10, t0=0)
    with pytest.raises(ValueError, match="step"):
        LabelSchedule(10, 10).labels_due(-1)
