"""GRPO's and RLOO's loss on fixed inputs against the papers' formulas, written out here element by element.

Inputs: per-token log-probs of π_θ, π_old and π_ref, sequence scores and ragged response masks.
The trainer goes through what its update uses (``shaped_advantages`` → ``minibatch_loss``); the
expected value is computed with Python floats and loops, sharing no code with ``prefrl.losses``.
"""

from __future__ import annotations

import math

import pytest
import torch

from prefrl.lm.critic_free import CriticFreeConfig, CriticFreeTrainer
from prefrl.lm.models import tiny_causal_lm

K, CLIP, BETA = 4, 0.2, 0.05
LENGTHS = [7, 3, 5, 1, 6, 7, 2, 4]  # responses' valid tokens; the rows of a prompt's group are adjacent
SCORES = [1.0, 0.5, -0.3, 2.0, 0.1, 0.1, 0.1, 0.1]  # the second group's scores are all equal


def fixed_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, r = len(LENGTHS), max(LENGTHS)
    mask = (torch.arange(r)[None, :] < torch.tensor(LENGTHS)[:, None]).float()
    logps = -2.0 + 0.5 * torch.randn(b, r, generator=g)
    old_logps = -2.0 + 0.5 * torch.randn(b, r, generator=g)  # ratios far from 1: both clip sides act
    ref_logps = -2.0 + 0.5 * torch.randn(b, r, generator=g)
    return logps, old_logps, ref_logps, mask


def trainer_loss(algo, aggregation, kl_penalty, kl_estimator, normaliser=None):
    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=0)
    logps, old, ref, mask = fixed_inputs()
    b, r = mask.shape
    cfg = CriticFreeConfig(
        algo=algo, batch_size=b // K, num_generations=K, minibatch_size=b, max_new_tokens=r,
        kl_penalty=kl_penalty, kl_estimator=kl_estimator, kl_coef=BETA, clip_coef=CLIP,
        loss_aggregation=aggregation, loss_normaliser=normaliser,
    )  # fmt: skip
    trainer = CriticFreeTrainer(policy, None, lambda batch: None, tok, cfg)
    score_rewards = torch.zeros(b, r)
    score_rewards[torch.arange(b), torch.tensor(LENGTHS) - 1] = torch.tensor(SCORES)  # score on the last token
    beta, _, _, advantages = trainer.shaped_advantages(score_rewards, old, ref, mask)
    pg, kl = trainer.minibatch_loss(logps, old, ref, advantages, mask, beta)
    return float(pg + kl), advantages


# ---------------------------------------------------------------- the papers' formulas, by hand


def _rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(x) for x in row[:n]] for row, n in zip(t, LENGTHS)]  # valid tokens only


def _clipped(ratio: float, adv: float) -> float:
    """−min(ρA, clip(ρ, 1−ε, 1+ε)A): PPO's surrogate (Schulman et al. 2017 eq. 7), as a loss."""
    return -min(ratio * adv, min(max(ratio, 1 - CLIP), 1 + CLIP) * adv)


def _reduce(per_token: list[list[float]], aggregation: str, normaliser: float) -> float:
    if aggregation == "token-mean":  # DAPO (Yu et al. 2025 eq. 8)
        return sum(map(sum, per_token)) / sum(map(len, per_token))
    if aggregation == "sequence-mean":  # GRPO (Shao et al. 2024 eq. 3): 1/G Σ_i 1/|o_i| Σ_t
        return sum(sum(row) / len(row) for row in per_token) / len(per_token)
    return sum(map(sum, per_token)) / (len(per_token) * normaliser)  # Dr. GRPO (Liu et al. 2025)


def grpo_by_hand(aggregation: str, normaliser: float) -> tuple[float, list[float]]:
    """GRPO: Â_i = (r_i − mean(r)) / (std(r) + 1e-4) per group (unbiased std; 0 for an all-equal group);
    per token the clipped surrogate + β·k3, k3 = π_ref/π_θ − log(π_ref/π_θ) − 1 (Shao et al. 2024 eq. 4)."""
    lp, old, ref = (_rows(t) for t in fixed_inputs()[:3])
    adv = []
    for g in range(0, len(SCORES), K):
        grp = SCORES[g : g + K]
        mean = sum(grp) / K
        std = math.sqrt(sum((x - mean) ** 2 for x in grp) / (K - 1))
        adv += [(x - mean) / (std + 1e-4) for x in grp]
    per_token = []
    for i in range(len(SCORES)):
        row = []
        for t in range(LENGTHS[i]):
            d = ref[i][t] - lp[i][t]
            row.append(_clipped(math.exp(lp[i][t] - old[i][t]), adv[i]) + BETA * (math.exp(d) - d - 1))
        per_token.append(row)
    return _reduce(per_token, aggregation, normaliser), adv


def rloo_by_hand() -> tuple[float, list[float]]:
    """RLOO (Ahmadian et al. 2024 eq. 6): R_i = score_i − β Σ_t log(π_old/π_ref) (the KL-shaped sequence
    reward, k1 on the sampled tokens), Â_i = R_i − 1/(k−1) Σ_{j≠i} R_j; per token the clipped surrogate,
    averaged over all valid tokens."""
    lp, old, ref = (_rows(t) for t in fixed_inputs()[:3])
    shaped = [SCORES[i] - BETA * sum(o - f for o, f in zip(old[i], ref[i])) for i in range(len(SCORES))]
    adv = []
    for i, r_i in enumerate(shaped):
        g = i - i % K
        others = [shaped[j] for j in range(g, g + K) if j != i]
        adv.append(r_i - sum(others) / (K - 1))
    per_token = [[_clipped(math.exp(a - o), adv[i]) for a, o in zip(lp[i], old[i])] for i in range(len(SCORES))]
    return _reduce(per_token, "token-mean", 1.0), adv


# ---------------------------------------------------------------- the checks


def _sequence_advantages(advantages: torch.Tensor) -> list[float]:
    return [float(row[0]) for row in advantages]  # broadcast over each response's tokens


@pytest.mark.parametrize("aggregation, normaliser", [("token-mean", None), ("sequence-mean", None), ("constant", 9.0)])
def test_grpo_loss_matches_the_papers_formula(aggregation, normaliser):
    loss, advantages = trainer_loss("grpo", aggregation, "loss", "k3", normaliser)
    expected, expected_adv = grpo_by_hand(aggregation, normaliser or max(LENGTHS))
    assert _sequence_advantages(advantages) == pytest.approx(expected_adv, abs=1e-5)
    assert _sequence_advantages(advantages)[4:] == [0.0] * 4  # all-equal group: zero, no NaN
    assert loss == pytest.approx(expected, abs=1e-5)
    assert loss != pytest.approx(grpo_by_hand("token-mean" if aggregation != "token-mean" else "sequence-mean",
                                              max(LENGTHS))[0], abs=1e-3)  # fmt: skip  # the aggregations differ here


def test_rloo_loss_matches_the_papers_formula():
    loss, advantages = trainer_loss("rloo", "token-mean", "reward", "k1")
    expected, expected_adv = rloo_by_hand()
    assert _sequence_advantages(advantages) == pytest.approx(expected_adv, abs=1e-5)
    assert loss == pytest.approx(expected, abs=1e-5)
    # the KL acts through the reward: the group of equal scores gets advantages (0 only with β = 0), summing to 0
    assert abs(sum(expected_adv[4:])) < 1e-5 and any(abs(a) > 1e-3 for a in expected_adv[4:])
