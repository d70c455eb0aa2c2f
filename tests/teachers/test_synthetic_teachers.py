"""Synthetic B-Pref teachers: answers match their definitions, statistically over many draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrl.data.types import Segment
from prefrl.teachers import Teacher, make_teacher
from prefrl.teachers.synthetic import TEACHER_PRESETS, SyntheticTeacher


def seg(rewards: list[float]) -> Segment:
    t = len(rewards)
    return Segment(obs=np.zeros((t, 2), np.float32), actions=np.zeros((t, 1), np.float32), true_rewards=np.array(rewards))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_every_preset_is_a_teacher() -> None:
    for name in TEACHER_PRESETS:
        teacher = make_teacher(name, rng())
        assert isinstance(teacher, Teacher)
        assert teacher.name == name


def test_rational_answers_by_return() -> None:
    teacher = make_teacher("rational", rng())
    pairs = [(seg([1.0, 2.0]), seg([0.0, 2.5])), (seg([0.0, 0.0]), seg([1.0, -0.5])), (seg([1.0]), seg([1.0]))]
    assert teacher.answer(pairs) == [1.0, 0.0, 0.5]
    assert teacher.answer_returns(np.array([3.0, -1.0, 2.0]), np.array([2.0, 1.0, 2.0])) == [1.0, 0.0, 0.5]
    assert teacher.answer([]) == []


def test_answer_needs_true_rewards() -> None:
    teacher = make_teacher("rational", rng())
    blind = Segment(obs=np.zeros((2, 2)), actions=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="right segment has no true_rewards"):
        teacher.answer([(seg([1.0, 1.0]), blind)])


def test_answer_returns_checks_shapes_and_values() -> None:
    teacher = make_teacher("rational", rng())
    with pytest.raises(ValueError, match="equal length"):
        teacher.answer_returns(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        teacher.answer_returns(np.array([np.nan]), np.zeros(1))


def test_stochastic_agreement_matches_bradley_terry() -> None:
    beta = 0.7
    teacher = make_teacher("stochastic", rng(1), beta=beta)
    deltas = np.repeat(np.array([-3.0, -1.0, 0.0, 0.5, 2.0]), 8000)
    mu = np.array(teacher.answer_returns(deltas, np.zeros_like(deltas)))
    assert set(np.unique(mu)) <= {0.0, 1.0}
    for d in np.unique(deltas):
        expected = 1.0 / (1.0 + math.exp(-beta * d))
        observed = mu[deltas == d].mean()
        # 8000 Bernoulli draws: standard error ≤ 0.0056, so 0.02 is > 3.5 σ.
        assert observed == pytest.approx(expected, abs=0.02), (d, observed, expected)


def test_stochastic_is_finite_for_huge_gaps() -> None:
    teacher = make_teacher("stochastic", rng(), beta=1.0)
    assert teacher.answer_returns(np.array([1e6, -1e6]), np.zeros(2)) == [1.0, 0.0]


def test_myopic_weights_the_end_of_the_segment() -> None:
    # Undiscounted: left 10 > right 9. Myopic (γ = 0.9, T = 10): left 10·0.9⁹ ≈ 3.87 < right 9.
    left, right = seg([10.0] + [0.0] * 9), seg([0.0] * 9 + [9.0])
    assert make_teacher("rational", rng()).answer([(left, right)]) == [1.0]
    assert make_teacher("myopic", rng(), gamma=0.9).answer([(left, right)]) == [0.0]
    # With γ = 0.99 the first step weighs 0.99⁹ ≈ 0.914: 9.14 > 9.
    assert make_teacher("myopic", rng(), gamma=0.99).answer([(left, right)]) == [1.0]


def test_skip_only_when_both_returns_are_below_threshold() -> None:
    teacher = make_teacher("skip", rng(), skip_threshold=1.0)
    answers = teacher.answer_returns(np.array([0.5, 2.0, 0.5, -3.0]), np.array([0.9, 0.0, 1.5, -4.0]))
    assert answers == [None, 1.0, 0.0, None]


def test_equal_within_threshold() -> None:
    teacher = make_teacher("equal", rng(), equal_threshold=0.5)
    answers = teacher.answer_returns(np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.4, 0.7, 1.6, 0.4]))
    assert answers == [0.5, 0.5, 0.0, 1.0]


def test_mistake_flip_rate_is_epsilon() -> None:
    eps = 0.1
    teacher = make_teacher("mistake", rng(2), epsilon=eps)
    r_left = rng(3).standard_normal(20000)
    r_right = rng(4).standard_normal(20000)
    mu = np.array(teacher.answer_returns(r_left, r_right))
    rational = (r_left > r_right).astype(float)
    flip_rate = np.mean(mu != rational)
    # 20000 draws: standard error 0.0021.
    assert flip_rate == pytest.approx(eps, abs=0.008)


def test_mistakes_leave_equal_answers_alone() -> None:
    teacher = make_teacher("mistake", rng(), epsilon=1.0, equal_threshold=0.5)
    answers = teacher.answer_returns(np.array([1.0, 1.0, 3.0]), np.array([1.2, 1.0, 0.0]))
    assert answers == [0.5, 0.5, 0.0]  # the clear pair is always flipped at ε = 1


def test_same_seed_same_answers() -> None:
    r_left, r_right = rng(5).standard_normal(200), rng(6).standard_normal(200)
    a = make_teacher("stochastic", rng(7)).answer_returns(r_left, r_right)
    b = make_teacher("stochastic", rng(7)).answer_returns(r_left, r_right)
    c = make_teacher("stochastic", rng(8)).answer_returns(r_left, r_right)
    assert a == b and a != c


def test_make_teacher_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="unknown teacher 'oracle'"):
        make_teacher("oracle", rng())
    with pytest.raises(ValueError, match="temperature"):
        make_teacher("stochastic", rng(), temperature=2.0)
    with pytest.raises(ValueError, match="beta"):
        make_teacher("stochastic", rng(), beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        make_teacher("myopic", rng(), gamma=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        make_teacher("mistake", rng(), epsilon=1.5)
    with pytest.raises(ValueError, match="rng"):
        SyntheticTeacher(rng=0)  # type: ignore[arg-type]
