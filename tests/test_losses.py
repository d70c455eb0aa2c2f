"""Tier 1: the pure losses against hand-computed numbers, including extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch

from prefrl.losses import (
    bradley_terry_loss,
    clipped_surrogate_loss,
    clipped_value_loss,
    dpo_loss,
    gae,
    kl_estimate,
    preference_log_probabilities,
    preference_probability,
)

D = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=D)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------- preference probability


def test_preference_probability_matches_formula() -> None:
    # P = 0.9·σ(Δ) + 0.05 with Δ = 1 − (−1) = 2.
    p = preference_probability(t(1.0, 0.0, 3.0), t(-1.0, 0.0, 3.5), random_response=0.1)
    expected = [0.9 * sigmoid(2.0) + 0.05, 0.5, 0.9 * sigmoid(-0.5) + 0.05]
    assert p.tolist() == pytest.approx(expected, abs=1e-12)


def test_preference_probability_without_random_response_is_sigmoid() -> None:
    p = preference_probability(t(2.0), t(0.0), random_response=0.0)
    assert p.item() == pytest.approx(sigmoid(2.0), abs=1e-12)


def test_preference_log_probabilities_sum_to_one_and_stay_finite_at_extremes() -> None:
    log_l, log_r = preference_log_probabilities(t(1e4, -1e4, 0.3), t(0.0, 0.0, -0.2), random_response=0.1)
    assert torch.all(torch.isfinite(log_l)) and torch.all(torch.isfinite(log_r))
    assert (log_l.exp() + log_r.exp()).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    # Δ = +1e4: P[left] = 0.95, P[right] = ε/2 = 0.05 exactly.
    assert log_l[0].item() == pytest.approx(math.log(0.95), abs=1e-12)
    assert log_r[0].item() == pytest.approx(math.log(0.05), abs=1e-12)


def test_preference_probability_rejects_bad_random_response() -> None:
    with pytest.raises(ValueError, match="random_response"):
        preference_probability(t(0.0), t(0.0), random_response=1.0)
    with pytest.raises(ValueError, match="random_response"):
        preference_probability(t(0.0), t(0.0), random_response=-0.1)


# ---------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_loss_hand_computed() -> None:
    # Pair 1: Δ = 1, μ = 1 → −log(0.9σ(1) + 0.05). Pair 2: Δ = 0, μ = 0.5 → −log 0.5.
    # Pair 3: Δ = −2, μ = 0 → −log(0.9σ(2) + 0.05).
    loss = bradley_terry_loss(t(1.0, 0.0, 0.0), t(0.0, 0.0, 2.0), t(1.0, 0.5, 0.0))
    expected = (
        -math.log(0.9 * sigmoid(1.0) + 0.05) - math.log(0.5) - math.log(0.9 * sigmoid(2.0) + 0.05)
    ) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_bradley_terry_loss_without_noise_is_cross_entropy() -> None:
    loss = bradley_terry_loss(t(0.7), t(0.2), t(0.0), random_response=0.0)
    assert loss.item() == pytest.approx(-math.log(1 - sigmoid(0.5)), abs=1e-12)


def test_bradley_terry_loss_finite_and_correct_for_huge_return_gaps() -> None:
    r_left = torch.tensor([1e4, 0.0], dtype=D, requires_grad=True)
    r_right = t(0.0, 1e4)
    # Both labels agree with the gap: loss → −log(0.95); both disagree: loss → −log(0.05).
    right = bradley_terry_loss(r_left, r_right, t(1.0, 0.0))
    assert right.item() == pytest.approx(-math.log(0.95), abs=1e-10)
    wrong = bradley_terry_loss(r_left, r_right, t(0.0, 1.0))
    assert wrong.item() == pytest.approx(-math.log(0.05), abs=1e-10)
    wrong.backward()
    assert torch.all(torch.isfinite(r_left.grad))
    # Without the random-response floor the wrong answer costs the full gap of 1e4 nats.
    no_floor = bradley_terry_loss(t(1e4), t(0.0), t(0.0), random_response=0.0)
    assert no_floor.item() == pytest.approx(1e4, rel=1e-12)


def test_bradley_terry_loss_float32_extremes() -> None:
    loss = bradley_terry_loss(torch.tensor([3e4]), torch.tensor([-3e4]), torch.tensor([0.0]))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-math.log(0.05), rel=1e-5)


def test_bradley_terry_loss_checks_shapes_and_mu() -> None:
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(t(0.0, 1.0), t(0.0), t(1.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(t(0.0, 1.0), t(0.0, 1.0), t(1.0))
    with pytest.raises(ValueError, match="mu"):
        bradley_terry_loss(t(0.0), t(0.0), t(1.5))
    with pytest.raises(ValueError, match="mu"):
        bradley_terry_loss(t(0.0), t(0.0), t(float("nan")))


# ---------------------------------------------------------------- GAE


def test_gae_hand_computed_without_dones() -> None:
    # T = 2, N = 1, γ = 0.9, λ = 0.5.
    rewards, values, last = t(1.0, 2.0).reshape(2, 1), t(0.5, 1.0).reshape(2, 1), t(3.0)
    adv, ret = gae(rewards, values, last, torch.zeros(2, 1, dtype=D), gamma=0.9, lam=0.5)
    delta1 = 2.0 + 0.9 * 3.0 - 1.0  # 3.7
    delta0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a1 = delta1
    a0 = delta0 + 0.9 * 0.5 * a1  # 3.065
    assert adv[:, 0].tolist() == pytest.approx([a0, a1], abs=1e-12)
    assert ret[:, 0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0], abs=1e-12)


def test_gae_dones_cut_the_chain() -> None:
    # Episode ends at t = 1 (dones[1] = 1): no bootstrap from V(s_2), and A_1 does not flow into … A_2 ← none.
    rewards = t(1.0, 1.0, 1.0).reshape(3, 1)
    values = t(0.0, 0.0, 0.0).reshape(3, 1)
    dones = t(0.0, 1.0, 0.0).reshape(3, 1)
    adv, _ = gae(rewards, values, t(10.0), dones, gamma=1.0, lam=1.0)
    # A_2 = 1 + V_last = 11; A_1 = 1 (cut: neither V(s_2) nor A_2); A_0 = 1 + A_1 = 2.
    assert adv[:, 0].tolist() == pytest.approx([2.0, 1.0, 11.0], abs=1e-12)


def test_gae_columns_are_independent() -> None:
    rewards = t(1.0, 2.0, 3.0, 4.0).reshape(2, 2)
    values = t(0.1, 0.2, 0.3, 0.4).reshape(2, 2)
    dones = t(0.0, 1.0, 0.0, 0.0).reshape(2, 2)
    adv, _ = gae(rewards, values, t(1.0, 2.0), dones, gamma=0.99, lam=0.95)
    for n in range(2):
        adv_n, _ = gae(rewards[:, n : n + 1], values[:, n : n + 1], t(1.0, 2.0)[n : n + 1], dones[:, n : n + 1], 0.99, 0.95)
        assert torch.allclose(adv[:, n], adv_n[:, 0])


def test_gae_checks_inputs() -> None:
    z = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="rewards must be"):
        gae(torch.zeros(3), torch.zeros(3), torch.zeros(()), torch.zeros(3), 0.9, 0.9)
    with pytest.raises(ValueError, match="values"):
        gae(z, torch.zeros(2, 3), torch.zeros(2), z, 0.9, 0.9)
    with pytest.raises(ValueError, match="last_values"):
        gae(z, z, torch.zeros(3), z, 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae(z, z, torch.zeros(2), z, 1.5, 0.9)


# ---------------------------------------------------------------- PPO losses


def test_clipped_surrogate_hand_computed() -> None:
    # ρ = e^{0.5} ≈ 1.6487 with A = 2 → clipped at 1.2·2 = 2.4; ρ = e^{−0.5} ≈ 0.6065 with A = −1 → clip 0.8·(−1) = −0.8
    # (min picks the clipped −0.8 < −0.6065); ρ = 1 with A = 3 → 3.
    logp = t(0.5, -0.5, 0.0)
    loss = clipped_surrogate_loss(logp, t(0.0, 0.0, 0.0), t(2.0, -1.0, 3.0), clip_coef=0.2)
    assert loss.item() == pytest.approx(-(2.4 - 0.8 + 3.0) / 3, abs=1e-12)


def test_clipped_surrogate_mask() -> None:
    loss = clipped_surrogate_loss(t(0.0, 0.0), t(0.0, 0.0), t(1.0, 5.0), clip_coef=0.2, mask=t(1.0, 0.0))
    assert loss.item() == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(ValueError, match="clip_coef"):
        clipped_surrogate_loss(t(0.0), t(0.0), t(1.0), clip_coef=0.0)
    with pytest.raises(ValueError, match="shape"):
        clipped_surrogate_loss(t(0.0, 1.0), t(0.0), t(1.0, 1.0), clip_coef=0.2)


def test_clipped_value_loss_hand_computed() -> None:
    # V = 2, old = 0, R = 3, c = 0.5: unclipped (2−3)² = 1, clipped V = 0.5 → (0.5−3)² = 6.25 → max 6.25.
    loss = clipped_value_loss(t(2.0), t(0.0), t(3.0), clip_coef=0.5)
    assert loss.item() == pytest.approx(0.5 * 6.25, abs=1e-12)
    plain = clipped_value_loss(t(2.0), t(0.0), t(3.0), clip_coef=None)
    assert plain.item() == pytest.approx(0.5, abs=1e-12)


# ---------------------------------------------------------------- DPO


def test_dpo_sigmoid_hand_computed() -> None:
    # h = (−1 − (−2)) − (−3 − (−2)) = 1 + 1 = 2; β = 0.5 → −log σ(1).
    loss = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(-math.log(sigmoid(1.0)), abs=1e-12)


def test_dpo_label_smoothing_hand_computed() -> None:
    loss = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.2)
    expected = -0.8 * math.log(sigmoid(1.0)) - 0.2 * math.log(sigmoid(-1.0))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_dpo_ipo_hand_computed() -> None:
    # h = 2, β = 0.5 → (2 − 1/(2·0.5))² = 1.
    loss = dpo_loss(t(-1.0, 0.0), t(-3.0, 0.0), t(-2.0, 0.0), t(-2.0, 0.0), beta=0.5, loss_type="ipo")
    assert loss.tolist() == pytest.approx([1.0, 1.0], abs=1e-12)  # h = 0 → (0 − 1)² = 1 too


def test_dpo_extreme_margins_stay_finite() -> None:
    loss = dpo_loss(t(0.0, -1e4), t(-1e4, 0.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    assert torch.all(torch.isfinite(loss))
    assert loss[0].item() == pytest.approx(0.0, abs=1e-12)
    assert loss[1].item() == pytest.approx(1e4, rel=1e-12)


def test_dpo_checks_inputs() -> None:
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), label_smoothing=0.5)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0, 1.0))


# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_hand_computed() -> None:
    # log r = ref − logp = −0.5 − (−1) = 0.5.
    logp, ref = t(-1.0), t(-0.5)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(-0.5, abs=1e-12)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.125, abs=1e-12)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(math.exp(0.5) - 1 - 0.5, abs=1e-12)


def test_kl_estimators_agree_in_expectation() -> None:
    # π = N(0, 1), π_ref = N(1, 1): KL(π‖π_ref) = 0.5. k1 and k3 are unbiased.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, generator=gen, dtype=D)
    logp = -0.5 * x**2
    ref = -0.5 * (x - 1.0) ** 2
    assert kl_estimate(logp, ref, "k1").mean().item() == pytest.approx(0.5, abs=0.01)
    assert kl_estimate(logp, ref, "k3").mean().item() == pytest.approx(0.5, abs=0.02)
    assert kl_estimate(logp, ref, "k2").min().item() >= 0.0
    assert kl_estimate(logp, ref, "k3").min().item() >= 0.0


def test_kl_estimate_checks_inputs() -> None:
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(t(0.0), t(0.0), "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        kl_estimate(t(0.0, 1.0), t(0.0))


# ---------------------------------------------------------------- SAC


def test_soft_q_target_matches_formula_and_stops_at_terminals() -> None:
    from prefrl.losses import soft_q_target

    # y = r + γ(1 − d)(min(Q1', Q2') − α log π'): row 0 = 1 + 0.9·(2 − 0.5·(−1)) = 3.25; row 1 terminal = −1.
    y = soft_q_target(t(1.0, -1.0), t(0.0, 1.0), t(2.0, 5.0), t(3.0, 4.0), t(-1.0, 0.3), alpha=0.5, gamma=0.9)
    assert y.tolist() == pytest.approx([3.25, -1.0])
    assert not y.requires_grad
    with pytest.raises(ValueError, match="next_q2"):
        soft_q_target(t(1.0), t(0.0), t(1.0), t(1.0, 2.0), t(0.0), 0.1, 0.9)


def test_sac_critic_actor_and_temperature_losses_match_formulas() -> None:
    from prefrl.losses import sac_actor_loss, sac_critic_loss, sac_temperature_loss

    # J_Q = ½·mean((1 − 2)², (3 − 2)²) + ½·mean((2 − 2)², (1 − 2)²) = 0.5 + 0.25
    assert float(sac_critic_loss(t(1.0, 3.0), t(2.0, 1.0), t(2.0, 2.0))) == pytest.approx(0.75)
    # J_π = mean(0.2·(−1) − min(1, 2), 0.2·0.5 − min(4, 3)) = mean(−1.2, −2.9)
    assert float(sac_actor_loss(t(-1.0, 0.5), t(1.0, 4.0), t(2.0, 3.0), 0.2)) == pytest.approx(-2.05)
    # J(α) = −log α·mean(log π + H̄) = 0 at log α = 0; ∂J/∂log α = −mean(log π + H̄) = −(−0.5 + 1)
    log_alpha = torch.tensor(0.0, dtype=D, requires_grad=True)
    loss = sac_temperature_loss(log_alpha, t(-0.5, -0.5), target_entropy=1.0)
    loss.backward()
    assert loss.detach().item() == pytest.approx(0.0)
    assert float(log_alpha.grad) == pytest.approx(-0.5)  # descent raises log α: entropy 0.5 < target 1
    with pytest.raises(ValueError, match="scalar"):
        sac_temperature_loss(torch.zeros(1), t(0.0), 1.0)
