"""Degenerate-output detectors and KL profiles."""

import torch

from prefrl.diagnostics.degenerate import degenerate_report, repetition_score, whitespace_only_change
from prefrl.diagnostics.kl_profile import front_loaded_fraction, kl_metrics, kl_position_profile

CLEAN = [
    "This blender is quiet and the jug cleans easily.",
    "A warm, funny film with a cast that clearly enjoyed it.",
    "Battery life is good, though the strap feels cheap.",
    "I would happily buy this kettle again.",
]


def test_clean_responses_flag_nothing():
    report = degenerate_report(CLEAN, references=CLEAN, rewards=[0.1, 0.2, 0.3, 0.4])
    assert report["degenerate/empty_rate"] == 0
    assert report["degenerate/whitespace_only_rate"] == 0
    assert report["degenerate/repetition_rate"] == 0
    assert report["degenerate/whitespace_change_rate"] == 0


def test_planted_degenerate_responses_are_flagged():
    planted = ["", "   \n ", "great great great great great great great great", CLEAN[0].replace(" ", "  ")]
    report = degenerate_report(planted, references=["x", "y", "z", CLEAN[0]])
    assert report["degenerate/empty_rate"] == 0.25
    assert report["degenerate/whitespace_only_rate"] == 0.25
    assert report["degenerate/repetition_rate"] == 0.25
    assert report["degenerate/whitespace_change_rate"] == 0.25
    assert whitespace_only_change("a  b", "a b") and not whitespace_only_change("a b", "a b")
    assert repetition_score("the cat sat on the mat") == 0.0


def test_reward_length_correlation():
    responses = ["a" * k for k in range(1, 11)]
    assert degenerate_report(responses, rewards=list(range(10)))["degenerate/reward_length_corr"] > 0.99


def test_kl_metrics_per_token_and_per_sequence():
    logp = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [-2.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-2.0, -1.5, -1.0, 0.0], [-2.5, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    m = kl_metrics(logp, ref, mask, "k1")
    # k1 per token = logp - ref: [1, .5, 0] and [.5, 0]
    assert abs(m["objective/kl"] - (1.5 + 0.5) / 2) < 1e-6
    assert abs(m["objective/kl_seq_max"] - 1.5) < 1e-6
    assert abs(m["objective/kl_token"] - 2.0 / 5) < 1e-6
    profile = kl_position_profile(logp - ref, mask)
    assert torch.allclose(profile, torch.tensor([0.75, 0.25, 0.0, 0.0]))


def test_front_loaded_flag():
    up_front = torch.zeros(2, 20)
    up_front[:, 0] = 5.0
    spread = torch.full((2, 20), 0.25)
    mask = torch.ones(2, 20)
    assert torch.all(front_loaded_fraction(up_front, mask) > 0.99)
    assert torch.allclose(front_loaded_fraction(spread, mask), torch.tensor([0.25, 0.25]))
