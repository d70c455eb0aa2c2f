"""SURF: pseudo-labels only above the confidence threshold; cropped segments keep their pairing and μ."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.data.types import Segment
from prefrl.reward.semi_supervised import (
    crop_segment,
    ensemble_preference_probability,
    pseudo_label_pairs,
    pseudo_labels,
    temporal_crop,
)


def segment(value: float, length: int = 20, seg_id: int | None = None) -> Segment:
    t = np.arange(length, dtype=np.float32)
    return Segment(obs=np.stack([np.full(length, value), t], 1).astype(np.float32),
                   actions=np.full((length, 1), value, dtype=np.float32), true_rewards=t.copy(),
                   sim_states=np.stack([t, -t], 1), start_step=100, id=seg_id)


class SumOfFirstFeature:
    """Members score a segment by Σ obs₀ times their own scale, so every member agrees on the order."""

    def __init__(self, scales: tuple[float, ...] = (0.1, 0.2, 0.3)) -> None:
        self.scales = np.asarray(scales)

    def segments_member_returns(self, segments):  # noqa: ANN001, ANN201 - test double
        totals = np.array([s.obs[:, 0].sum() for s in segments])
        return self.scales[:, None] * totals[None, :]


def test_pseudo_labels_only_above_the_threshold() -> None:
    p = np.array([0.97, 0.03, 0.9, 0.5, 0.6, 0.05, 0.951])
    keep, mu = pseudo_labels(p, threshold=0.95)
    assert keep.tolist() == [0, 1, 6]
    assert mu.tolist() == [1.0, 0.0, 1.0]
    assert pseudo_labels(p, threshold=0.99)[0].size == 0
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(p, threshold=0.4)


def test_pseudo_label_pairs_from_an_ensemble() -> None:
    ensemble = SumOfFirstFeature()
    # per-step values 1 vs 0 over 20 steps → returns differ by 2, 4, 6 per member: confident
    # 0.1 vs 0 → differ by 0.2, 0.4, 0.6: P ≈ 0.60, not confident
    pairs = [(segment(1.0), segment(0.0)), (segment(0.1), segment(0.0)), (segment(0.0), segment(1.0))]
    p = ensemble_preference_probability(ensemble, pairs)
    expected = np.mean(1 / (1 + np.exp(-np.array([2.0, 4.0, 6.0]))))
    assert p[0] == pytest.approx(expected) and p[2] == pytest.approx(1 - expected)
    labelled = pseudo_label_pairs(ensemble, pairs, threshold=0.9)
    assert [(left is pairs[i][0], right is pairs[i][1], mu) for i, (left, right, mu) in zip((0, 2), labelled)] == [
        (True, True, 1.0), (True, True, 0.0)]


def test_crop_segment_cuts_every_per_step_field_alike() -> None:
    seg = segment(2.0, seg_id=7)
    cropped = crop_segment(seg, 5, 8)
    assert len(cropped) == 8
    assert cropped.obs[:, 1].tolist() == list(range(5, 13))
    assert cropped.true_rewards.tolist() == list(range(5, 13))
    assert cropped.sim_states[:, 0].tolist() == list(range(5, 13))
    assert cropped.start_step == 105 and cropped.id is None and cropped.meta["cropped_from"] == 7
    with pytest.raises(ValueError, match="outside"):
        crop_segment(seg, 15, 8)


def test_cropped_pairs_keep_their_pairing_and_mu() -> None:
    rng = np.random.default_rng(0)
    pairs = [(segment(float(i), seg_id=2 * i), segment(-float(i), seg_id=2 * i + 1), mu)
             for i, mu in enumerate([1.0, 0.0, 0.5, 1.0] * 10)]
    cropped = temporal_crop(pairs, min_len=10, max_len=15, rng=rng, max_shift=2)
    assert len(cropped) == len(pairs)
    lengths = set()
    for (left, right, mu), (c_left, c_right, c_mu) in zip(pairs, cropped):
        assert c_mu == mu
        assert c_left.meta["cropped_from"] == left.id and c_right.meta["cropped_from"] == right.id
        assert np.all(c_left.obs[:, 0] == left.obs[0, 0]) and np.all(c_right.obs[:, 0] == right.obs[0, 0])
        assert len(c_left) == len(c_right) and 10 <= len(c_left) <= 15
        assert abs(c_left.meta["crop_start"] - c_right.meta["crop_start"]) <= 2
        lengths.add(len(c_left))
    assert len(lengths) > 1  # H' is drawn per pair
