"""--resume continues step counter, batch order, optimizer and scheduler: 2 + 2 steps == 4 steps."""

from __future__ import annotations

import torch

from prefrl.lm.dpo import train_dpo
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.models import load_causal_lm
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.reward_model_config import RMConfig
from prefrl.lm.reward_model_trainer import train_reward_model
from prefrl.lm.sft import train_sft
from prefrl.lm.sft_config import SFTConfig
from prefrl.lm.training import TRAINING_STATE_FILE

COMMON = {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 1}


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=1e-5, msg=k)


def _check_history(straight: dict, resumed: dict) -> None:
    assert [h["step"] for h in resumed["history"]] == [3.0, 4.0]
    for a, b in zip(straight["history"][2:], resumed["history"]):
        assert abs(a["charts/learning_rate"] - b["charts/learning_rate"]) < 1e-12  # scheduler continued


def test_sft_resume(tiny_model_dir, sft_file, tmp_path) -> None:
    kw = {"model": str(tiny_model_dir), "data": str(sft_file), **COMMON}
    straight = train_sft(SFTConfig(output_dir=str(tmp_path / "a"), save_every=2, **kw))
    ckpt = tmp_path / "a" / "checkpoint-2"
    assert torch.load(ckpt / TRAINING_STATE_FILE, weights_only=False)["step"] == 2
    resumed = train_sft(SFTConfig(output_dir=str(tmp_path / "b"), resume=str(ckpt), **kw))
    _check_history(straight, resumed)
    _assert_same(load_causal_lm(tmp_path / "a")[0], load_causal_lm(tmp_path / "b")[0])
    state = torch.load(tmp_path / "b" / TRAINING_STATE_FILE, weights_only=False)
    assert state["step"] == 4 and state["optimizer"]["state"][0]["step"] == 4  # Adam moments carried over


def test_dpo_lora_resume(tiny_model_dir, pref_file, tmp_path) -> None:
    kw = {"model": str(tiny_model_dir), "data": str(pref_file), "lora_r": 2, "lora_dropout": 0.0, **COMMON}
    straight = train_dpo(DPOConfig(output_dir=str(tmp_path / "a"), save_every=2, **kw))
    resumed = train_dpo(
        DPOConfig(output_dir=str(tmp_path / "b"), resume=str(tmp_path / "a" / "checkpoint-2"), **kw)
    )
    _check_history(straight, resumed)
    for a, b in zip(straight["history"][2:], resumed["history"]):
        assert abs(a["loss/dpo"] - b["loss/dpo"]) < 1e-5
    _assert_same(load_causal_lm(tmp_path / "a")[0], load_causal_lm(tmp_path / "b")[0])


def test_rm_resume(tiny_model_dir, pref_file, tmp_path) -> None:
    kw = {"model": str(tiny_model_dir), "data": str(pref_file), "n_heads": 2, **COMMON}
    straight = train_reward_model(RMConfig(output_dir=str(tmp_path / "a"), save_every=2, **kw))
    resumed = train_reward_model(
        RMConfig(output_dir=str(tmp_path / "b"), resume=str(tmp_path / "a" / "checkpoint-2"), **kw)
    )
    _check_history(straight, resumed)
    _assert_same(RewardModel.from_pretrained(tmp_path / "a"), RewardModel.from_pretrained(tmp_path / "b"))


def test_resume_with_other_train_top_layers_is_refused(tiny_model_dir, pref_file, tmp_path) -> None:
    import pytest

    kw = {"model": str(tiny_model_dir), "data": str(pref_file), **COMMON}
    train_reward_model(RMConfig(output_dir=str(tmp_path / "a"), save_every=2, train_top_layers=1, **kw))
    ckpt = tmp_path / "a" / "checkpoint-2"
    with pytest.raises(ValueError, match="train_top_layers=1, not 0"):
        train_reward_model(RMConfig(output_dir=str(tmp_path / "b"), resume=str(ckpt), **kw))
    resumed = train_reward_model(
        RMConfig(output_dir=str(tmp_path / "c"), resume=str(ckpt), train_top_layers=1, **kw)
    )
    assert [h["step"] for h in resumed["history"]] == [3.0, 4.0]
