"""LM PPO: KL as a loss term, and the reward-hacking instruments in its metrics and logs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from prefrl.lm.ppo import LMPPOConfig

_spec = importlib.util.spec_from_file_location("lm_ppo_helpers", Path(__file__).with_name("test_ppo.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_trainer, PROMPTS = _helpers.make_trainer, _helpers.PROMPTS


def _kl_after(steps: int, **cfg) -> float:
    trainer = make_trainer(**cfg)
    for _ in range(steps):
        m = trainer.step(PROMPTS)
    return m["objective/kl"]


def test_kl_as_a_loss_term_holds_the_policy_near_the_reference():
    # mean over three seeds: one 8-prompt rollout's KL is a noisy measurement
    free = sum(_kl_after(8, kl_coef=0.0, seed=s) for s in range(3)) / 3
    held = sum(_kl_after(8, kl_coef=10.0, kl_penalty="loss", kl_estimator="k2", seed=s) for s in range(3)) / 3
    assert free > 0.05
    assert held < 0.5 * free, (held, free)


def test_kl_in_the_loss_is_not_in_the_reward():
    trainer = make_trainer(kl_coef=0.5, kl_penalty="loss", kl_estimator="k3")
    trainer.step(PROMPTS)
    m = trainer.step(PROMPTS)
    assert m["objective/kl"] > 0 and m["objective/non_score_reward"] == 0.0


def test_config_rejects_unknown_kl_penalty():
    with pytest.raises(ValueError, match="kl_penalty"):
        LMPPOConfig(kl_penalty="both")


# Planted responses: 3 empty, 2 whitespace-only, 1 repetitive (3-gram repeat score 4/7 > 0.3), 2 plain.
PLANTED = ["", "", "", "  ", "\n\t", "a b c a b c a b c", "a good film", "fine"]


def test_metrics_carry_front_loading_and_degenerate_rates_and_reach_tensorboard(tmp_path):
    # Plant known KL and known responses in each rollout: the reference is a copy of the policy, so
    # with k1 (log π − log π_ref) the recorded log-probs plus δ give KL = δ where δ is planted.
    # Rows 0-3 spend all their KL on the first token (front-loaded share 1); rows 4-7 spread it
    # evenly (share ⌈L/4⌉ / L for a response of L tokens).
    trainer = make_trainer(kl_estimator="k1", kl_coef=0.0)
    sample = trainer.rollout
    expected_front = []

    def planted_rollout(prompts):
        batch = sample(prompts)
        assert batch.logprobs is not None and len(prompts) == len(PLANTED)
        mask = batch.response_mask.float()
        delta = mask.clone()  # (B, R): δ = 1 on every valid token ...
        delta[:4] = 0.0
        delta[:4, 0] = 2.0  # ... or δ = 2 on the first token only
        lengths = mask.sum(1)
        shares = torch.cat([torch.ones(4), torch.ceil(lengths[4:] / 4) / lengths[4:]])
        expected_front.append(float(shares.mean()))
        return dataclasses.replace(batch, logprobs=batch.logprobs + delta * mask, responses=list(PLANTED))

    trainer.rollout = planted_rollout
    history = trainer.train(PROMPTS, 2, tensorboard_dir=tmp_path / "tb", log_path=tmp_path / "m.jsonl")
    m = history[0]  # the first step: π = π_ref, so the planted δ is all the KL there is
    assert 0.25 < expected_front[0] < 1.0  # rows 4-7 are longer than one token
    assert m["objective/kl_front_loaded"] == pytest.approx(expected_front[0], abs=1e-4)
    for step in history:
        assert step["degenerate/empty_rate"] == 3 / 8
        assert step["degenerate/whitespace_only_rate"] == 2 / 8
        assert step["degenerate/repetition_rate"] == 1 / 8
    logged = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert logged[0]["objective/kl_front_loaded"] == pytest.approx(expected_front[0], abs=1e-4)
    assert logged[-1]["degenerate/empty_rate"] == 3 / 8
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_support_constrained_rollouts_stay_inside_the_reference_support():
    import torch

    from prefrl.lm.support import support_violation_rate

    trainer = make_trainer(support_top_p=0.3, kl_coef=0.0)
    trainer.step(PROMPTS)  # the policy moves away from the reference
    batch = trainer.rollout(PROMPTS)
    ids, attn, p = batch.input_ids, batch.attention_mask, batch.query_ids.shape[1]
    with torch.no_grad():
        logits = trainer.ref_policy(ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    ref_logits = logits[:, p - 1 : -1]
    assert support_violation_rate(batch.response_ids, ref_logits, batch.response_mask, top_p=0.3) == 0.0
    free = make_trainer(kl_coef=0.0)
    free.step(PROMPTS)
    fb = free.rollout(PROMPTS)
    with torch.no_grad():
        fl = free.ref_policy(fb.input_ids, attention_mask=fb.attention_mask,
                             position_ids=(fb.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert support_violation_rate(fb.response_ids, fl[:, fb.query_ids.shape[1] - 1 : -1], fb.response_mask, top_p=0.3) > 0.0
    with pytest.raises(ValueError, match="support_top_p"):
        LMPPOConfig(support_top_p=1.5)


def test_gold_reward_is_logged_beside_the_proxy():
    import torch

    trainer = make_trainer()
    trainer.gold_fn = lambda batch: torch.full((len(batch.responses),), 0.25)
    m = trainer.step(PROMPTS)
    assert m["objective/gold"] == pytest.approx(0.25)
    assert m["objective/gold_proxy_diverging"] == 0.0


def test_gold_monitor_calibration_survives_a_resume(tmp_path):
    """The monitor's per-sample start (proxy, gold) pairs are what the gold transfer is measured against."""
    trainer = make_trainer()
    trainer.gold_fn = lambda batch: torch.arange(len(batch.responses), dtype=torch.float32)
    trainer.step(PROMPTS)
    trainer.step(PROMPTS)
    start = list(trainer.gold_monitor.start_gold)
    assert len(start) == 2 * len(PROMPTS) and start[: len(PROMPTS)] == [float(i) for i in range(len(PROMPTS))]
    trainer.save_checkpoint(tmp_path / "run")
    again = make_trainer()
    again.load_checkpoint(tmp_path / "run")
    assert again.gold_monitor.start_gold == start and again.gold_monitor.steps == [1.0, 2.0]


def test_reward_model_scorer_aggregates_ensemble_heads():
    import torch

    from prefrl.lm.models import tiny_causal_lm
    from prefrl.lm.reward_functions import RewardModelScorer
    from prefrl.lm.reward_model import RewardModel

    model, tok = tiny_causal_lm(seed=0)
    rm = RewardModel.from_causal_lm(model, n_heads=3)
    trainer = make_trainer()
    batch = trainer.rollout(PROMPTS)
    mean = RewardModelScorer(rm, aggregate="mean")(batch)
    worst_scorer = RewardModelScorer(rm, aggregate="min")
    worst = worst_scorer(batch)
    members = rm.member_scores(batch.input_ids, batch.attention_mask)
    assert torch.allclose(worst, members.min(0).values, atol=1e-5)
    assert torch.all(worst <= mean + 1e-6) and worst_scorer.last_disagreement.shape == (len(PROMPTS),)
    with pytest.raises(ValueError, match="unknown aggregation"):
        RewardModelScorer(rm, aggregate="median")
