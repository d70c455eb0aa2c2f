"""RewardEnsemble: shapes, members, discrete and image inputs, normalisation, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefrl.data.types import Segment
from prefrl.reward.ensemble import RewardEnsemble, stack_segments


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_shapes_and_mean_of_members() -> None:
    ens = RewardEnsemble((5,), (2,), n_members=4, seed=0)
    obs, act = torch.from_numpy(randn(3, 7, 5)), torch.from_numpy(randn(3, 7, 2, seed=1))
    members = ens.member_rewards(obs, act)
    assert members.shape == (4, 3, 7)
    assert torch.allclose(ens(obs, act), members.mean(0))
    assert torch.allclose(ens.segment_returns(obs, act), members.sum(-1))
    assert torch.allclose(ens.disagreement(obs, act), members.std(0, unbiased=False))
    # Members are initialised independently, so they disagree.
    assert members.std(0).min() > 0
    flat_pred = ens.predict(obs.reshape(21, 5).numpy(), act.reshape(21, 2).numpy(), batch_size=4)
    assert flat_pred.shape == (21,)
    np.testing.assert_allclose(flat_pred, members.mean(0).reshape(21).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ens.predict_members(obs.numpy(), act.numpy()).shape == (4, 3, 7)


def test_same_seed_same_weights() -> None:
    obs, act = randn(10, 5), randn(10, 2)
    a = RewardEnsemble((5,), (2,), seed=3).predict(obs, act)
    b = RewardEnsemble((5,), (2,), seed=3).predict(obs, act)
    c = RewardEnsemble((5,), (2,), seed=4).predict(obs, act)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_actions_matter_unless_disabled() -> None:
    obs = randn(6, 5)
    ens = RewardEnsemble((5,), (2,), seed=0)
    assert not np.allclose(ens.predict(obs, randn(6, 2, seed=1)), ens.predict(obs, randn(6, 2, seed=2)))
    obs_only = RewardEnsemble((5,), (2,), use_actions=False, seed=0)
    np.testing.assert_array_equal(obs_only.predict(obs, randn(6, 2, seed=1)), obs_only.predict(obs, None))


def test_discrete_actions_are_one_hot() -> None:
    ens = RewardEnsemble((3,), (), action_dim=4, seed=0)
    obs = np.repeat(randn(1, 3), 4, axis=0)
    r = ens.predict(obs, np.arange(4))
    assert r.shape == (4,) and len(np.unique(r)) == 4
    # The first layer sees exactly obs ‖ one_hot(a).
    w0, b0 = ens.mlps.weights[0][0], ens.mlps.biases[0][0]
    x = torch.cat([torch.from_numpy(obs[:1]), torch.tensor([[0.0, 0.0, 1.0, 0.0]])], dim=1)
    h = torch.nn.functional.leaky_relu(x @ w0 + b0, 0.01)
    for w, b in zip(list(ens.mlps.weights)[1:-1], list(ens.mlps.biases)[1:-1]):
        h = torch.nn.functional.leaky_relu(h @ w[0] + b[0], 0.01)
    out = h @ ens.mlps.weights[-1][0] + ens.mlps.biases[-1][0]
    member0 = ens.predict_members(obs, np.arange(4))[0, 2]
    assert out.item() == pytest.approx(float(member0), abs=1e-5)


def test_bad_inputs_raise_clear_errors() -> None:
    ens = RewardEnsemble((5,), (2,))
    with pytest.raises(ValueError, match="obs must end in obs_shape"):
        ens.predict(randn(4, 6), randn(4, 2))
    with pytest.raises(ValueError, match="act must have shape"):
        ens.predict(randn(4, 5), randn(3, 2))
    with pytest.raises(ValueError, match="act is required"):
        ens.predict(randn(4, 5), None)
    with pytest.raises(ValueError, match="n_members"):
        RewardEnsemble((5,), (2,), n_members=0)
    with pytest.raises(ValueError, match="dropout"):
        RewardEnsemble((5,), (2,), dropout=1.0)
    with pytest.raises(ValueError, match="target_std"):
        RewardEnsemble((5,), (2,), target_std=0.0)
    with pytest.raises(ValueError, match="action_dim"):
        RewardEnsemble((5,), (2,), action_dim=3)
    with pytest.raises(ValueError, match="segment_returns needs"):
        ens.segment_returns(torch.zeros(4, 5), torch.zeros(4, 2))


@pytest.mark.parametrize("obs_shape", [(48, 44, 3), (4, 48, 44)])
def test_images_get_the_cnn_obs_only(obs_shape: tuple[int, int, int]) -> None:
    ens = RewardEnsemble(obs_shape, (2,), n_members=2, seed=0)
    assert ens.image and ens.cnns is not None and ens.mlps is None and not ens.use_actions
    assert ens.channels_last == (obs_shape[-1] == 3)
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 2, *obs_shape), dtype=np.uint8)
    r = ens.predict_members(frames, None)
    assert r.shape == (2, 5, 2) and np.all(np.isfinite(r))
    # The paper's CNN: 4 convs of 16 filters with strides 3, 2, 1, 1 and batch norm.
    convs = [m for m in ens.cnns[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [7, 5, 3, 3]
    assert [c.stride[0] for c in convs] == [3, 2, 1, 1]
    assert all(c.out_channels == 16 for c in convs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ens.cnns[0].modules())
    # Training mode (batch norm, dropout) works on a batch of frames and gives gradients.
    ens.train()
    ens.segment_returns(torch.from_numpy(frames)).sum().backward()
    assert ens.cnns[0][0][0].weight.grad is not None


def test_too_small_images_raise() -> None:
    with pytest.raises(ValueError, match="too small"):
        RewardEnsemble((16, 16, 3), ())


def test_predict_is_eval_mode_and_restores_training() -> None:
    ens = RewardEnsemble((5,), (2,), dropout=0.5, seed=0)
    ens.train()
    obs, act = randn(50, 5), randn(50, 2)
    np.testing.assert_array_equal(ens.predict(obs, act), ens.predict(obs, act))  # no dropout noise
    assert ens.training
    noisy = [ens(torch.from_numpy(obs), torch.from_numpy(act)).detach().numpy() for _ in range(2)]
    assert not np.allclose(noisy[0], noisy[1])  # dropout on in training mode


def test_update_normalisation_standardises_each_member() -> None:
    ens = RewardEnsemble((5,), (2,), n_members=3, target_std=2.0, seed=0)
    obs, act = randn(4000, 5) * 3 + 1, randn(4000, 2, seed=1)
    raw = ens.predict_members(obs, act, normalised=False)
    ens.update_normalisation(obs, act)
    norm = ens.predict_members(obs, act)
    np.testing.assert_allclose(norm.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(norm.std(axis=1), 2.0, rtol=1e-4)
    # An affine map per member: the raw outputs are unchanged, and the ranking is kept.
    np.testing.assert_array_equal(ens.predict_members(obs, act, normalised=False), raw)
    assert np.all(np.argsort(norm[1]) == np.argsort(raw[1]))
    with pytest.raises(ValueError, match="at least 2"):
        ens.update_normalisation(obs[:1], act[:1])


def test_state_dict_round_trips_weights_and_normalisation() -> None:
    ens = RewardEnsemble((5,), (2,), seed=0)
    obs, act = randn(100, 5), randn(100, 2, seed=1)
    ens.update_normalisation(obs, act)
    fresh = RewardEnsemble((5,), (2,), seed=1)
    assert not np.allclose(fresh.predict(obs, act), ens.predict(obs, act))
    fresh.load_state_dict(ens.state_dict())
    np.testing.assert_array_equal(fresh.predict(obs, act), ens.predict(obs, act))
    assert torch.equal(fresh.norm_scale, ens.norm_scale) and torch.any(fresh.norm_scale != 1.0)


def test_per_member_batches_match_shared_batches() -> None:
    ens = RewardEnsemble((5,), (2,), n_members=3, seed=0)
    obs, act = torch.from_numpy(randn(8, 5)), torch.from_numpy(randn(8, 2, seed=1))
    shared = ens.member_rewards(obs, act, normalised=False)  # (3, 8)
    per_member = ens.member_rewards_per_member(obs.expand(3, 8, 5), act.expand(3, 8, 2))
    assert torch.allclose(shared, per_member)
    # Member m only sees its own batch.
    mixed = torch.stack([obs, torch.zeros_like(obs), obs])
    out = ens.member_rewards_per_member(mixed, act.expand(3, 8, 2))
    assert torch.allclose(out[0], shared[0]) and torch.allclose(out[2], shared[2])
    assert not torch.allclose(out[1], shared[1])


def test_segments_member_returns_handles_unequal_lengths() -> None:
    ens = RewardEnsemble((5,), (2,), seed=0)
    segs = [Segment(obs=randn(t, 5, seed=t), actions=randn(t, 2, seed=t + 10)) for t in (3, 7, 5)]
    returns = ens.segments_member_returns(segs)
    assert returns.shape == (3, 3)
    for i, s in enumerate(segs):
        expected = ens.predict_members(s.obs, s.actions, normalised=False).sum(axis=1)
        np.testing.assert_allclose(returns[:, i], expected, rtol=1e-5, atol=1e-5)
    obs, act, mask = stack_segments(segs)
    assert obs.shape == (3, 7, 5) and mask.sum(1).tolist() == [3.0, 7.0, 5.0]
    with pytest.raises(ValueError, match="segment 1"):
        stack_segments([segs[0], Segment(obs=randn(3, 4), actions=randn(3, 2))])
