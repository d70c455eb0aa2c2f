"""Query selectors: disagreement picks the top decile of member variance; entropy and uniform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.select import DisagreementSelector, EntropySelector, UniformSelector, make_selector
from prefrl.reward.toy import LinearRewardToy


def candidates(n: int, seed: int = 0):
    return LinearRewardToy(obs_dim=4, act_dim=1, segment_length=6).pairs(n, np.random.default_rng(seed))


def member_probs_by_hand(pairs, ens: RewardEnsemble) -> np.ndarray:
    """σ(R_m(left) − R_m(right)) for each member, computed directly from per-step rewards."""
    ens.eval()
    with torch.no_grad():
        out = []
        for left, right in pairs:
            r_l = ens.member_rewards(left.obs, left.actions, normalised=False).sum(-1)
            r_r = ens.member_rewards(right.obs, right.actions, normalised=False).sum(-1)
            out.append(torch.sigmoid(r_l - r_r).numpy())
    return np.stack(out, axis=1)  # (M, C)


def test_disagreement_picks_the_top_decile_of_member_variance() -> None:
    pairs = candidates(200)
    ens = RewardEnsemble((4,), (1,), n_members=3, seed=0)
    chosen = make_selector("disagreement", np.random.default_rng(0)).select(pairs, 20, ens)
    assert len(chosen) == len(set(chosen)) == 20
    variance = member_probs_by_hand(pairs, ens).var(axis=0)
    threshold = np.quantile(variance, 0.9)
    assert np.all(variance[chosen] >= threshold - 1e-9)
    assert variance[chosen[0]] == pytest.approx(variance.max(), rel=1e-5)  # best first


def test_entropy_picks_the_most_uncertain_mean_preference() -> None:
    pairs = candidates(100, seed=1)
    ens = RewardEnsemble((4,), (1,), n_members=3, seed=1)
    chosen = EntropySelector(np.random.default_rng(0)).select(pairs, 10, ens)
    closeness = np.abs(member_probs_by_hand(pairs, ens).mean(axis=0) - 0.5)
    assert set(chosen) == set(np.argsort(closeness)[:10].tolist())


def test_shared_segments_are_scored_once_and_consistently() -> None:
    pairs = candidates(30, seed=2)
    segs = [s for pair in pairs for s in pair]
    shared = [(segs[i], segs[(i * 7 + 3) % len(segs)]) for i in range(len(segs))]  # each segment reused
    ens = RewardEnsemble((4,), (1,), seed=2)
    scores = DisagreementSelector(np.random.default_rng(0)).scores(shared, ens)
    np.testing.assert_allclose(scores, member_probs_by_hand(shared, ens).var(axis=0), rtol=1e-4, atol=1e-9)


def test_uniform_is_distinct_and_covers_all_candidates() -> None:
    pairs = candidates(10)
    selector = UniformSelector(np.random.default_rng(0))
    counts = np.zeros(10)
    for _ in range(2000):
        chosen = selector.select(pairs, 3, None)
        assert len(set(chosen)) == 3 and all(0 <= i < 10 for i in chosen)
        counts[chosen] += 1
    # Each candidate is chosen with probability 3/10: 600 of 2000, sd ≈ 20.5.
    assert np.all(np.abs(counts - 600) < 90)


def test_selector_errors() -> None:
    pairs = candidates(5)
    ens = RewardEnsemble((4,), (1,))
    with pytest.raises(ValueError, match="unknown selector 'random'"):
        make_selector("random", np.random.default_rng(0))
    for name in ("uniform", "disagreement", "entropy"):
        selector = make_selector(name, np.random.default_rng(0))
        assert selector.name == name
        with pytest.raises(ValueError, match="k must be in"):
            selector.select(pairs, 6, ens)
        assert selector.select(pairs, 0, ens) == []
    with pytest.raises(ValueError, match="needs the reward ensemble"):
        make_selector("disagreement", np.random.default_rng(0)).select(pairs, 2, None)


def test_segments_with_cached_member_rewards_are_scored_from_the_cache_not_the_networks() -> None:
    from prefrl.reward.select import segment_member_returns

    pairs = candidates(20, seed=3)
    segs = [s for pair in pairs for s in pair]
    ens = RewardEnsemble((4,), (1,), n_members=3, seed=3)
    fresh = segment_member_returns(segs, ens)  # no cache: the networks' pass
    np.testing.assert_allclose(fresh, ens.segments_member_returns(segs), rtol=1e-6)
    # Cache half the segments with values the networks would never give: those come back summed.
    rng = np.random.default_rng(0)
    for seg in segs[::2]:
        seg.member_rewards = rng.normal(size=(3, len(seg))).astype(np.float32)
    got = segment_member_returns(segs, ens)
    np.testing.assert_allclose(got[:, ::2], np.stack([s.member_rewards.sum(1) for s in segs[::2]], 1), rtol=1e-6)
    np.testing.assert_allclose(got[:, 1::2], fresh[:, 1::2], rtol=1e-6)
    # A cache from an ensemble of another size is ignored.
    segs[0].member_rewards = np.ones((5, len(segs[0])), np.float32)
    np.testing.assert_allclose(segment_member_returns(segs, ens)[:, 0], fresh[:, 0], rtol=1e-6)
    # The selector ranks by the cached returns.
    scores = DisagreementSelector(np.random.default_rng(0)).scores(pairs, ens)
    probs = torch.sigmoid(torch.from_numpy(got[:, 0::2] - got[:, 1::2])).numpy()
    probs[:, 0] = member_probs_by_hand(pairs[:1], ens)[:, 0]  # segs[0]'s cache is now ignored
    np.testing.assert_allclose(scores, probs.var(axis=0), rtol=1e-4, atol=1e-9)
