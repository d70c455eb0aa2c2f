"""RewardTrainer: metrics, loss falls, config checks, adaptive L2, persistence, variants of input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from prefrl.data.types import Segment
from prefrl.losses import bradley_terry_loss
from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.toy import LinearRewardToy
from prefrl.reward.trainer import RewardTrainer, RewardTrainerConfig
from prefrl.teachers import make_teacher

KEYS = {"reward/train_loss", "reward/val_loss", "reward/accuracy", "reward/l2"}


def labelled(n: int, seed: int = 0, teacher: str = "rational", length: int = 10):
    toy = LinearRewardToy(obs_dim=4, act_dim=1, segment_length=length, seed=seed)
    rng = np.random.default_rng(seed)
    pairs = toy.pairs(n, rng)
    mus = make_teacher(teacher, rng).answer(pairs)
    return toy, [(left, right, mu) for (left, right), mu in zip(pairs, mus)]


def small_trainer(seed: int = 0, **cfg) -> RewardTrainer:
    ens = RewardEnsemble((4,), (1,), n_members=3, seed=seed)
    return RewardTrainer(ens, RewardTrainerConfig(**{"epochs": 10, "lr": 1e-3, **cfg}), np.random.default_rng(seed))


def test_train_returns_contract_metrics_and_loss_falls() -> None:
    _, data = labelled(120)
    trainer = small_trainer()
    history: list[dict[str, float]] = []
    metrics = trainer.train(data, progress=lambda epoch, m: history.append(dict(m)))
    assert KEYS | {"reward/true_agreement", "reward/rank_correlation"} <= set(metrics)
    assert len(history) == 2  # epochs 5 and 10 with eval_every = 5
    assert metrics["reward/train_loss"] < math.log(2) - 0.1  # better than a constant reward
    assert history[-1]["reward/train_loss"] < history[0]["reward/train_loss"]
    assert metrics["reward/n_val"] == int(120 / math.e) and metrics["reward/n_train"] == 120 - int(120 / math.e)
    assert 0.5 < metrics["reward/accuracy"] <= 1.0
    assert metrics["reward/true_agreement"] > 0.7 and metrics["reward/rank_correlation"] > 0.7
    assert metrics["reward/l2"] == trainer.l2


def test_every_weight_matrix_changes() -> None:
    _, data = labelled(60)
    trainer = small_trainer(epochs=2)
    weights = trainer.ensemble.mlps.weights
    before = [w.detach().clone() for w in weights]
    trainer.train(data)
    for b, w in zip(before, weights):
        assert all(not torch.equal(b[m], w[m]) for m in range(3))
    # The output bias adds the same constant to both returns of a pair, so BT gives it no gradient.
    assert trainer.ensemble.mlps.biases[-1].grad is None or torch.all(trainer.ensemble.mlps.biases[-1].grad == 0)


def test_truth_metrics_need_true_rewards() -> None:
    _, data = labelled(30)
    blind = [
        (Segment(obs=a.obs, actions=a.actions), Segment(obs=r.obs, actions=r.actions), mu) for a, r, mu in data
    ]
    metrics = small_trainer(epochs=1).train(blind)
    assert KEYS <= set(metrics)
    assert "reward/true_agreement" not in metrics and "reward/rank_correlation" not in metrics


def test_incomparable_pairs_are_dropped_and_equal_labels_train() -> None:
    _, data = labelled(40)
    mixed = [(a, r, None) for a, r, _ in data[:10]] + [(a, r, 0.5) for a, r, _ in data[10:20]] + data[20:]
    metrics = small_trainer(epochs=1).train(mixed)
    assert metrics["reward/n_train"] + metrics["reward/n_val"] == 30
    with pytest.raises(ValueError, match="at least one comparison"):
        small_trainer().train([(a, r, None) for a, r, _ in data])
    with pytest.raises(ValueError, match="mu"):
        small_trainer().train([(data[0][0], data[0][1], 0.3)])


def _unpadded_returns(ens: RewardEnsemble, segments: list[Segment]) -> torch.Tensor:
    """Raw per-member returns (M, B), each segment scored on its own real steps only."""
    return torch.tensor(np.stack([ens.predict_members(s.obs, s.actions, normalised=False).sum(-1) for s in segments], 1))


def test_unequal_segment_lengths_are_masked() -> None:
    # Lengths 5 and 9 alternate on *both* sides, so each side's short segments get zero-padded
    # steps (a zero step has a non-zero reward: without the mask it would count).
    _, short = labelled(20, length=5)
    _, long = labelled(20, seed=1, length=9)
    mixed = [(s[0], g[1], s[2]) if i % 2 else (g[0], s[1], g[2]) for i, (s, g) in enumerate(zip(short, long))]
    lefts, rights = [p[0] for p in mixed], [p[1] for p in mixed]
    mu = torch.tensor([p[2] for p in mixed], dtype=torch.float32)
    assert {len(s) for s in lefts} == {len(s) for s in rights} == {5, 9}

    # The training loss of the padded batch is the mean of the pairs' losses computed one pair at
    # a time (no padding), and so are its gradients.
    trainer = small_trainer(epochs=1, bootstrap=False, val_fraction=0.0, normalisation_segments=0)
    params = list(trainer.ensemble.parameters())
    n, m = len(mixed), trainer.ensemble.n_members
    padded = trainer._member_loss(trainer._stack(mixed), torch.arange(n).expand(m, n))
    one_by_one = torch.stack(
        [trainer._member_loss(trainer._stack([p]), torch.zeros(m, 1, dtype=torch.long)) for p in mixed]
    ).mean()
    torch.testing.assert_close(padded, one_by_one)
    for g_pad, g_one in zip(torch.autograd.grad(padded, params, allow_unused=True),
                            torch.autograd.grad(one_by_one, params, allow_unused=True)):  # fmt: skip
        if g_pad is not None or g_one is not None:
            torch.testing.assert_close(g_pad, g_one)

    # After a round, the reported loss and the predicted returns of padded stacks are those of the
    # segments scored alone.
    metrics = trainer.train(mixed)
    ens = trainer.ensemble
    r_left, r_right = _unpadded_returns(ens, lefts), _unpadded_returns(ens, rights)  # (M, P)
    expected = bradley_terry_loss(r_left, r_right, mu.expand(m, n), trainer.cfg.random_response)
    assert metrics["reward/n_val"] == 0
    assert metrics["reward/train_loss"] == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_allclose(ens.segments_member_returns(lefts), r_left.numpy(), rtol=1e-5, atol=1e-6)


def test_trainer_normalises_the_ensemble_over_recent_segments() -> None:
    _, data = labelled(50)
    trainer = small_trainer(epochs=2, normalisation_segments=40)
    trainer.train(data)
    recent = [s for a, r, _ in data[-20:] for s in (a, r)]
    rewards = trainer.ensemble.predict_members(np.stack([s.obs for s in recent]), np.stack([s.actions for s in recent]))
    np.testing.assert_allclose(rewards.reshape(3, -1).mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(rewards.reshape(3, -1).std(axis=1), 1.0, rtol=1e-3)


def test_adaptive_l2_keeps_val_over_train_in_band() -> None:
    trainer = small_trainer(l2=1e-3, l2_factor=2.0)
    trainer._adapt_l2(train_loss=0.2, val_loss=0.5)  # ratio 2.5 > 1.5: overfitting → more L2
    assert trainer.l2 == pytest.approx(2e-3)
    trainer._adapt_l2(train_loss=0.4, val_loss=0.5)  # 1.25: in band → unchanged
    assert trainer.l2 == pytest.approx(2e-3)
    trainer._adapt_l2(train_loss=0.5, val_loss=0.5)  # 1.0 < 1.1: underfitting → less L2
    assert trainer.l2 == pytest.approx(1e-3)


def test_overfitting_raises_l2_in_training() -> None:
    # 24 pairs, a wide net and many epochs overfit: val/train far above 1.5.
    _, data = labelled(24, teacher="mistake")
    trainer = small_trainer(epochs=60, lr=3e-3, l2=1e-5, l2_factor=2.0)
    metrics = trainer.train(data)
    assert metrics["reward/l2"] > 1e-5


def test_state_dict_round_trip_resumes_identically() -> None:
    _, data = labelled(60)
    a = small_trainer(epochs=3)
    a.train(data)
    ens_state = {k: v.clone() for k, v in a.ensemble.state_dict().items()}
    trainer_state = a.state_dict()
    b = small_trainer(seed=5, epochs=3)  # different init and rng, overwritten by the states
    b.ensemble.load_state_dict(ens_state)
    b.load_state_dict(trainer_state)
    assert b.l2 == a.l2 and b.rounds == a.rounds == 1
    metrics_a, metrics_b = a.train(data), b.train(data)
    assert metrics_a == metrics_b
    for pa, pb in zip(a.ensemble.parameters(), b.ensemble.parameters()):
        assert torch.equal(pa, pb)


def test_config_rejects_bad_values() -> None:
    for field, value in [("lr", 0.0), ("epochs", 0), ("batch_size", 0), ("val_fraction", 1.0),
                         ("l2", -1.0), ("l2_factor", 1.0), ("random_response", 1.0), ("eval_every", 0)]:
        with pytest.raises(ValueError, match=field):
            RewardTrainerConfig(**{field: value})
    with pytest.raises(ValueError, match="l2_ratio_low"):
        RewardTrainerConfig(l2_ratio_low=2.0, l2_ratio_high=1.5)


def _split_frame_segment(rng: np.random.Generator, length: int = 2) -> Segment:
    """44×44 grey frames, top half at brightness a, bottom half at b (plus noise); hidden reward a − b."""
    top, bottom = rng.uniform(0, 1, (2, length))
    frames = np.empty((length, 44, 44, 1), np.float32)
    frames[:, :22], frames[:, 22:] = top[:, None, None, None], bottom[:, None, None, None]
    frames = np.clip(frames * 200 + rng.integers(0, 56, frames.shape), 0, 255).astype(np.uint8)
    return Segment(obs=frames, actions=np.zeros(length, np.int64), true_rewards=top - bottom)


def test_image_ensemble_learns_a_spatial_reward() -> None:
    # The CNN path of the reward model on a tiny image task: which half of the frame is brighter.
    rng = np.random.default_rng(0)
    pairs = [(_split_frame_segment(rng), _split_frame_segment(rng)) for _ in range(32)]
    mus = make_teacher("rational", rng).answer(pairs)
    held_out_rng = np.random.default_rng(1)
    held_out = [_split_frame_segment(held_out_rng) for _ in range(60)]
    true = np.array([s.true_rewards.sum() for s in held_out])
    ens = RewardEnsemble((44, 44, 1), (), n_members=2, seed=0)
    assert ens.cnns is not None and ens.mlps is None

    def held_out_correlation() -> float:
        return float(spearmanr(ens.segments_member_returns(held_out).mean(0), true).statistic)

    before = held_out_correlation()
    trainer = RewardTrainer(ens, RewardTrainerConfig(epochs=10, batch_size=16, lr=3e-3), rng)
    metrics = trainer.train([(a, r, mu) for (a, r), mu in zip(pairs, mus)])
    after = held_out_correlation()
    assert math.isfinite(metrics["reward/train_loss"]) and metrics["reward/train_loss"] < math.log(2) - 0.1
    assert metrics["reward/true_agreement"] > 0.8  # on the training pairs' true returns
    # On fresh segments: from anti-correlated at this initialisation (≈ −0.8) to correlated (≈ 0.8).
    assert before < 0 and after > 0.6 and after > before + 1.0, (before, after)
