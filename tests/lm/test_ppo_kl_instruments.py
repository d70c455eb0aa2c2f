"""LM PPO: KL as a loss term, and the reward-hacking instruments in its metrics and logs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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
    free = _kl_after(8, kl_coef=0.0)
    held = _kl_after(8, kl_coef=10.0, kl_penalty="loss", kl_estimator="k2")
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


def test_metrics_carry_front_loading_and_degenerate_rates_and_reach_tensorboard(tmp_path):
    trainer = make_trainer()
    history = trainer.train(PROMPTS, 2, tensorboard_dir=tmp_path / "tb", log_path=tmp_path / "m.jsonl")
    m = history[-1]
    assert 0.0 <= m["objective/kl_front_loaded"] <= 1.0
    for key in ("degenerate/empty_rate", "degenerate/whitespace_only_rate", "degenerate/repetition_rate"):
        assert 0.0 <= m[key] <= 1.0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
