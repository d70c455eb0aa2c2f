from __future__ import annotations

import pytest
import torch

from prefrl.lm.encoding import collate_prompt_completion
from prefrl.lm.models import tiny_tokenizer
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.reward_model_config import RMConfig
from prefrl.lm.reward_model_trainer import reward_metrics, train_reward_model
from prefrl.lm.sft import sft_labels, train_sft
from prefrl.lm.sft_config import SFTConfig


def test_sft_labels_mask_prompt_and_padding() -> None:
    tok = tiny_tokenizer()
    b = collate_prompt_completion(tok, ["abc", "a"], ["xy", "z"])
    labels = sft_labels(b["input_ids"], b["attention_mask"], b["completion_mask"])
    assert labels[0].tolist() == [-100] * 3 + b["input_ids"][0, 3:].tolist()  # xy + EOS kept
    assert labels[1].tolist() == [-100, *b["input_ids"][1, 1:3].tolist(), -100, -100, -100]


def test_sft_lowers_completion_loss(tiny_model_dir, sft_file, tmp_path) -> None:
    res = train_sft(
        SFTConfig(
            model=str(tiny_model_dir),
            data=str(sft_file),
            output_dir=str(tmp_path),
            max_steps=8,
            batch_size=4,
            learning_rate=3e-3,
        )
    )
    losses = [r["loss/sft"] for r in res["history"]]
    assert losses[-1] < losses[0] - 0.5


def test_rm_learns_preferences_ties_and_normalises(tiny_model_dir, pref_file, tmp_path) -> None:
    res = train_reward_model(
        RMConfig(
            model=str(tiny_model_dir),
            data=str(pref_file),
            output_dir=str(tmp_path),
            max_steps=8,
            batch_size=4,
            learning_rate=1e-3,
            center_rewards_coef=0.01,
        )
    )
    h = res["history"]
    assert (
        h[-1]["loss/bt"] < h[0]["loss/bt"] and h[-1]["reward/accuracy"] == 1.0 and h[-1]["reward/margin"] > 0
    )
    assert "loss/center" in h[-1]
    rm = RewardModel.from_pretrained(tmp_path).eval()
    tok = tiny_tokenizer()
    prompts = [f"Review {i}:" for i in range(8)]
    b = collate_prompt_completion(tok, prompts * 2, [" good great fine"] * 8 + [" bad awful poor"] * 8)
    with torch.no_grad():
        s = rm(b["input_ids"], b["attention_mask"])
    assert s.mean().abs() < 1e-3 and s.std().item() == pytest.approx(1.0, abs=1e-3)  # training responses
    assert (s[:8] > s[8:]).all()
    m = reward_metrics(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    assert m["reward/accuracy"] == 1.0  # the tie is not counted in accuracy
    with pytest.raises(ValueError, match="exactly one of data or store"):
        RMConfig()


def test_rm_with_lora_trains_head_and_adapter(tiny_model_dir, pref_file, tmp_path) -> None:
    train_reward_model(
        RMConfig(
            model=str(tiny_model_dir),
            data=str(pref_file),
            output_dir=str(tmp_path),
            max_steps=2,
            batch_size=4,
            learning_rate=1e-2,
            lora_r=2,
            lora_target_modules="q_proj,v_proj",
        )
    )
    assert (tmp_path / "adapter_config.json").exists()
    rm = RewardModel.from_pretrained(tmp_path)
    lora_b = [p for n, p in rm.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapter moved away from zero
    frozen = [p for n, p in rm.backbone.named_parameters() if "lora" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)


def test_rm_train_top_layers_changes_only_the_top_layer_and_head(tiny_model_dir, pref_file, tmp_path) -> None:
    before = RewardModel.from_pretrained_lm(str(tiny_model_dir), seed=0)
    res = train_reward_model(
        RMConfig(
            model=str(tiny_model_dir),
            data=str(pref_file),
            output_dir=str(tmp_path),
            max_steps=4,
            batch_size=4,
            learning_rate=1e-3,
            normalize=False,
            train_top_layers=1,
        )
    )
    assert res["history"][-1]["loss/bt"] < res["history"][0]["loss/bt"]
    after = RewardModel.from_pretrained(tmp_path)
    old = dict(before.named_parameters())
    changed = {k for k, p in after.named_parameters() if not torch.equal(p, old[k])}
    top = len(after.backbone.layers) - 1
    assert changed and all(f"layers.{top}." in k or k.startswith(("head", "backbone.norm")) for k in changed)
    assert any(k.startswith("head") for k in changed)


def test_train_top_layers_and_lora_are_exclusive() -> None:
    with pytest.raises(ValueError, match="lora_r and train_top_layers"):
        RMConfig(data="x.jsonl", lora_r=4, train_top_layers=2)
    with pytest.raises(ValueError, match="train_top_layers must be ≥ 0"):
        SFTConfig(data="x.jsonl", train_top_layers=-1)
