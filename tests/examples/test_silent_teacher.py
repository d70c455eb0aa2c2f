"""The two-party chat reward (silent-teacher environment) on a tiny random model, and the example's quick mode."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.rollout import RolloutBatch, sample_responses

ROOT = Path(__file__).resolve().parents[2]


def _load_example_module(path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("silent_teacher_chat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_chat = _load_example_module(ROOT / "examples/silent_teacher/chat.py")
ChatConfig, ChatReward, is_silent, sentiment_reward = (
    _chat.ChatConfig, _chat.ChatReward, _chat.is_silent, _chat.sentiment_reward
)


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    model, tok = tiny_causal_lm(seed=0)
    tok.padding_side = "left"
    return model.eval(), tok


def make_chat(tiny, **kwargs) -> ChatReward:
    model, tok = tiny
    cfg = ChatConfig(partner_max_new_tokens=6, **kwargs)
    return ChatReward(model, tok, cfg, torch.Generator().manual_seed(0))


def test_sentiment_reward_maps_empty_and_neutral_to_half():
    r = sentiment_reward(["", "   ", "The book is on the table.", "I love this, thank you so much!", "This is awful and I hate it."])
    assert r[0] == 0.5 and r[1] == 0.5 and r[2] == 0.5
    assert r[3] > 0.8 and r[4] < 0.2
    assert all(0.0 <= x <= 1.0 for x in r)


def test_empty_partner_reply_scores_half(tiny):
    chat = make_chat(tiny)
    assert chat.score([""]) == [0.5]


def test_is_silent():
    assert is_silent("") and is_silent(" \n\t ")
    assert not is_silent(" a ")


def test_prompts_render_each_side_of_the_conversation(tiny):
    chat = make_chat(tiny)
    history = [("partner", "I failed my test."), ("agent", "Let's look at it together."), ("partner", "Okay.")]
    agent_prompt = chat.add_conversation(history)
    # the agent sees its own turns as assistant, the partner's as user, and is asked to speak
    assert "<|im_start|>user\nI failed my test.<|im_end|>" in agent_prompt
    assert "<|im_start|>assistant\nLet's look at it together.<|im_end|>" in agent_prompt
    assert agent_prompt.startswith("<|im_start|>system\n" + chat.cfg.agent_system)
    assert agent_prompt.endswith("<|im_start|>assistant\n")
    partner_prompt = chat.partner_prompt(history + [("agent", "Good.")])
    assert "<|im_start|>assistant\nI failed my test.<|im_end|>" in partner_prompt
    assert "<|im_start|>user\nGood.<|im_end|>" in partner_prompt
    assert chat.history(agent_prompt) == tuple(history)


def test_bad_conversations_are_refused(tiny):
    chat = make_chat(tiny)
    with pytest.raises(ValueError, match="end with the partner"):
        chat.add_conversation([("partner", "hi"), ("agent", "hello")])
    with pytest.raises(ValueError, match="speaker"):
        chat.add_conversation([("teacher", "hi")])
    with pytest.raises(ValueError, match="at least"):
        chat.add_conversation([])
    with pytest.raises(ValueError, match="unknown prompt"):
        chat.play(["never registered"], ["hello"])
    with pytest.raises(ValueError, match="empty_turn"):
        ChatConfig(empty_turn="nobody")
    with pytest.raises(ValueError, match="partner_max_new_tokens"):
        ChatConfig(partner_max_new_tokens=0)


def test_empty_turn_is_handed_to_the_base_model(tiny):
    chat = make_chat(tiny)
    prompts = chat.prompts_for(["I failed.", "Help me.", "Hello there."])
    step = chat.play(prompts, ["", " \n ", "Well done"])
    assert step.replaced == [True, True, False]
    # the spoken turn of a silent row is what the base model says as the agent, sampled
    # with the chat's generator: replaying that generator reproduces it exactly
    model, tok = tiny
    g = torch.Generator().manual_seed(0)
    expected = sample_responses(
        model, tok, [chat.agent_prompt([("partner", "I failed.")]), chat.agent_prompt([("partner", "Help me.")])],
        max_new_tokens=6, temperature=chat.cfg.partner_temperature, max_prompt_length=chat.cfg.max_prompt_length,
        generator=g,
    ).responses
    assert step.agent_turns[:2] == expected
    assert step.agent_turns[2] == "Well done"
    assert step.policy_turns == ["", " \n ", "Well done"]
    assert len(step.partner_replies) == 3 and len(step.rewards) == 3
    assert step.rewards == chat.score(step.partner_replies)


def test_silence_mode_keeps_the_empty_turn(tiny):
    chat = make_chat(tiny, empty_turn="silence")
    prompts = chat.prompts_for(["I failed."])
    step = chat.play(prompts, [""])
    assert step.replaced == [False] and step.agent_turns == [""]


def test_reward_fn_on_a_rollout_batch(tiny):
    model, tok = tiny
    chat = make_chat(tiny)
    prompts = chat.prompts_for(["I failed.", "Why is the sky blue?"])
    batch = sample_responses(model, tok, prompts, max_new_tokens=5, temperature=1.0, generator=torch.Generator().manual_seed(1))
    rewards = chat(batch)
    assert rewards.shape == (2,) and rewards.dtype == torch.float32
    assert torch.allclose(rewards, torch.tensor(chat.last.rewards))
    assert chat.last.policy_turns == batch.responses


def test_quick_mode_runs_end_to_end(tmp_path):
    out = tmp_path / "st"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/silent_teacher/run.py"), "--quick", "--out", str(out),
         "--arms", "penalty", "budget_lo"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    run = _example()
    assert set(results["arms"]) == {"penalty", "budget_lo"}
    for name in ("penalty", "budget_lo"):
        rows = [json.loads(line) for line in (out / f"metrics_{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 2
        for row in rows:
            for key in ("objective/kl", "objective/kl_token", "kl/kl_front_loaded", "turn/silent_rate", "objective/scores"):
                assert key in row
            # the trainer's score is the mean chat reward the example splits into silent and spoken turns
            silent, spoken = row["reward/silent_mean"] or 0.0, row["reward/spoken_mean"] or 0.0
            rate = row["turn/silent_rate"]
            assert row["objective/scores"] == pytest.approx(rate * silent + (1 - rate) * spoken, abs=1e-6)
        # the eval summary is that of the eval samples written beside it
        ev = results["arms"][name]["eval"]
        samples = json.loads((out / f"samples_{name}.json").read_text())
        assert len(samples) == 8
        assert ev["reward"] == pytest.approx(sum(float(s["reward"]) for s in samples) / 8, abs=6e-4)
        assert ev["silent_rate"] == sum(is_silent(s["agent"]) for s in samples) / 8
        assert ev["whitespace_trick_rate"] == sum(run.whitespace_trick(s["agent"]) for s in samples) / 8
    # the budget arm's β moved (dual ascent), the fixed one did not
    pen = [json.loads(x)["objective/kl_coef"] for x in (out / "metrics_penalty.jsonl").read_text().splitlines()]
    bud = [json.loads(x)["objective/kl_coef"] for x in (out / "metrics_budget_lo.jsonl").read_text().splitlines()]
    assert pen[0] == pen[1] and bud[1] != bud[0]
    for f in ("kl_profile.png", "training.png", "table.md", "samples_base.json"):
        assert (out / f).stat().st_size > 0


def _example():  # noqa: ANN202
    """examples/silent_teacher/run.py as a module (it imports ``chat`` from its own directory)."""
    folder = str(ROOT / "examples/silent_teacher")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location("silent_teacher_run", Path(folder) / "run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def test_example_metrics_on_planted_turns_and_kl():
    # The example's per-step instruments on a planted batch of 4 turns with known rates.
    run = _example()
    turns = ["", " \n", "hello  there", "fine."]  # 2 silent, 1 whitespace trick ("  "), 1 plain
    rewards = [0.5, 0.5, 0.9, 0.7]
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])  # lengths 1, 2, 4, 4
    ref_logprobs = torch.full((4, 4), -2.0) * mask
    # KL (k1) per token: rows 2 and 3 spend 3 of their 4 nats on the first token, 1 on the last.
    kl = torch.tensor([[0.5, 0, 0, 0], [0.2, 0.2, 0, 0], [3.0, 0, 0, 1.0], [3.0, 0, 0, 1.0]])
    n = 4
    batch = RolloutBatch(
        query_ids=torch.zeros(n, 2, dtype=torch.long), query_mask=torch.ones(n, 2, dtype=torch.long),
        response_ids=torch.zeros(n, 4, dtype=torch.long), response_mask=mask,
        has_eos=torch.ones(n, dtype=torch.bool), last_index=mask.sum(1) - 1,
        prompts=["p"] * n, responses=turns,
    )
    trainer = SimpleNamespace(
        last_batch=batch, last_scored={"logprobs": ref_logprobs + kl, "ref_logprobs": ref_logprobs},
        cfg=SimpleNamespace(kl_estimator="k1"),
    )
    chat = SimpleNamespace(last=SimpleNamespace(policy_turns=turns, rewards=rewards))
    out, profile = run.extra_metrics(trainer, chat)
    # front-loaded share (head = first ⌈L/4⌉ tokens): 1, 0.5 (one of two tokens), 3/4, 3/4
    assert out["kl/kl_front_loaded"] == pytest.approx((1 + 0.5 + 0.75 + 0.75) / 4)
    assert out["kl/kl"] == pytest.approx((0.5 + 0.4 + 4 + 4) / 4)
    np.testing.assert_allclose(profile, [(0.5 + 0.2 + 3 + 3) / 4, 0.2 / 3, 0.0, 1.0], rtol=1e-6)
    assert out["turn/silent_rate"] == 0.5
    assert out["turn/whitespace_trick_rate"] == 0.25
    assert out["turn/first_token_eos_rate"] == 0.25  # the one-token turn
    assert out["turn/empty_rate"] == 0.25 and out["turn/whitespace_only_rate"] == 0.25
    assert out["reward/silent_mean"] == pytest.approx(0.5) and out["reward/spoken_mean"] == pytest.approx(0.8)
