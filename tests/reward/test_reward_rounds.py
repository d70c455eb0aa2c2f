"""Reward rounds whose cost does not grow with the data (#13 item 5): fixed minibatch steps, subsampled frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.toy import LinearRewardToy
from prefrl.reward.trainer import RewardTrainer, RewardTrainerConfig, _subsampled
from prefrl.teachers import make_teacher


def labelled(n: int, seed: int = 0, length: int = 20):
    toy = LinearRewardToy(obs_dim=4, act_dim=1, segment_length=length, seed=seed)
    rng = np.random.default_rng(seed)
    pairs = toy.pairs(n, rng)
    return [(left, right, mu) for (left, right), mu in zip(pairs, make_teacher("rational", rng).answer(pairs))]


def trainer(seed: int = 0, **cfg) -> RewardTrainer:
    ens = RewardEnsemble((4,), (1,), n_members=3, seed=seed)
    return RewardTrainer(ens, RewardTrainerConfig(**{"lr": 3e-3, **cfg}), np.random.default_rng(seed))


def _count_steps(t: RewardTrainer) -> list[int]:
    calls = [0]
    step = t.optimizer.step

    def counted(*a, **k):
        calls[0] += 1
        return step(*a, **k)

    t.optimizer.step = counted
    return calls


def test_a_steps_round_takes_the_same_number_of_steps_however_much_data_there_is() -> None:
    for n in (40, 400):
        t = trainer(steps_per_round=3, batch_size=8)
        calls = _count_steps(t)
        t.train(labelled(n))
        assert calls[0] == 3, n
    # epochs over the data grow with it (the old behaviour, still the default)
    t = trainer(epochs=1, batch_size=8)
    calls = _count_steps(t)
    t.train(labelled(400))
    assert calls[0] == math.ceil((400 - int(400 / math.e)) / 8)


def test_first_round_takes_initial_steps_then_steps_per_round() -> None:
    t = trainer(steps_per_round=2, initial_steps=7, batch_size=8)
    calls = _count_steps(t)
    data = labelled(60)
    t.train(data)
    assert calls[0] == 7
    t.train(data)
    assert calls[0] == 9


def test_subsampled_segment_returns_are_unbiased_and_weighted_by_length() -> None:
    segments = [pair[0] for pair in labelled(8, length=20)]
    rng = np.random.default_rng(1)
    obs, act, mask = _subsampled(segments, 5, rng)
    assert obs.shape[:2] == (8, 5) and mask.shape == (8, 5)
    assert torch.allclose(mask.sum(1), torch.full((8,), 20.0))  # each kept step stands for 20 / 5 steps
    per_step = torch.from_numpy(np.stack([np.asarray(s.obs)[:, 0] for s in segments]))  # (8, 20): any per-step value
    full = per_step.sum(1)
    draws = []
    for _ in range(3000):
        keep = np.stack([np.sort(rng.choice(20, 5, replace=False)) for _ in segments])
        draws.append((per_step.gather(1, torch.from_numpy(keep)) * 4.0).sum(1))
    assert torch.allclose(torch.stack(draws).mean(0), full, atol=0.15 * float(per_step.abs().mean()) * 20 / 5)


def test_steps_rounds_with_subsampled_frames_learn_the_reward() -> None:
    data = labelled(300)
    t = trainer(steps_per_round=40, batch_size=32, frames_per_segment=5, eval_pairs=50)
    for _ in range(5):
        metrics = t.train(data)
    assert metrics["reward/val_loss"] < math.log(2) - 0.1
    assert metrics["reward/accuracy"] > 0.75 and metrics["reward/true_agreement"] > 0.75


def test_steps_rounds_measure_every_eval_every_rounds_on_at_most_eval_pairs() -> None:
    t = trainer(steps_per_round=1, batch_size=8, eval_pairs=10, eval_every=3, normalisation_segments=16)
    seen = []
    evaluate = t._evaluate

    def spy(data, train_idx, val_idx):
        seen.append((len(train_idx), len(val_idx)))
        return evaluate(data, train_idx, val_idx)

    t._evaluate = spy
    data = labelled(200)
    rounds = [t.train(data) for _ in range(4)]
    assert seen == [(10, 10), (10, 10)]  # rounds 0 and 3
    assert rounds[1]["reward/val_loss"] == rounds[0]["reward/val_loss"]  # unmeasured: the last measured numbers


@pytest.mark.parametrize("field", ["steps_per_round", "initial_steps", "frames_per_segment", "eval_pairs"])
def test_bad_round_sizes_are_refused_naming_the_field(field) -> None:
    with pytest.raises(ValueError, match=field):
        RewardTrainerConfig(**{field: 0})
