"""After LoRA SFT, the reference of DPO and PPO is the SFT policy, not the pre-SFT base (#12 item 1)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from prefrl.lm.data import PreferenceExample
from prefrl.lm.dpo import pair_logprobs, train_dpo
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.models import load_causal_lm, tiny_causal_lm
from prefrl.lm.ppo import run_ppo
from prefrl.lm.ppo_config import PPORunConfig
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.sft import train_sft
from prefrl.lm.sft_config import SFTConfig


@pytest.fixture()
def lora_sft_dir(tiny_model_dir: Path, sft_file: Path, tmp_path: Path) -> Path:
    """A LoRA SFT run that moved the model well away from its base."""
    torch.set_num_threads(1)
    out = tmp_path / "sft"
    train_sft(
        SFTConfig(
            model=str(tiny_model_dir), data=str(sft_file), output_dir=str(out), max_steps=4, batch_size=4,
            learning_rate=5e-2, lora_r=4, lora_dropout=0.0,
        )
    )
    return out


def _pair_lp(model, tok, rows):  # noqa: ANN001, ANN202
    with torch.no_grad():
        return pair_logprobs(model.eval(), tok, rows, 64, "cpu")


def test_lora_sft_moved_the_policy(tiny_model_dir, lora_sft_dir):
    rows = [PreferenceExample("Review 0:", " good great fine", " bad awful poor")]
    base, tok = load_causal_lm(tiny_model_dir)
    sft, _ = load_causal_lm(lora_sft_dir, merge_adapter=True)
    assert (_pair_lp(base, tok, rows) - _pair_lp(sft, tok, rows)).abs().max() > 0.1


@pytest.mark.parametrize("lora_r", [4, 0])
def test_dpo_after_lora_sft_starts_at_ln2_with_zero_rewards(lora_sft_dir, pref_file, tmp_path, lora_r):
    out = tmp_path / f"dpo{lora_r}"
    result = train_dpo(
        DPOConfig(
            model=str(lora_sft_dir), data=str(pref_file), output_dir=str(out), max_steps=1, batch_size=4,
            lora_r=lora_r, lora_dropout=0.0,
        )
    )
    first = result["history"][0]
    assert first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/rejected"]) < 1e-5
    # the cached reference log-probs are the SFT policy's, not the base's
    rows = [PreferenceExample(f"Review {i}:", " good great fine", " bad awful poor") for i in range(2)]
    sft, tok = load_causal_lm(lora_sft_dir, merge_adapter=True)
    ref = torch.load(out / "ref_logps.pt", weights_only=False)["logps"][:2]  # (2, 2) chosen, rejected
    expected = _pair_lp(sft, tok, rows)
    torch.testing.assert_close(ref[:, 0], expected[:2], atol=1e-4, rtol=1e-5)


def test_ppo_after_lora_sft_starts_at_zero_kl(lora_sft_dir, prompt_file, tmp_path):
    lm, tok = tiny_causal_lm(seed=3)
    rm_dir = tmp_path / "rm"
    RewardModel.from_causal_lm(lm).save_pretrained(rm_dir, tokenizer=tok)
    for lora_r in (4, 0):
        result = run_ppo(
            PPORunConfig(
                policy=str(lora_sft_dir), reward_model=str(rm_dir), prompts=str(prompt_file),
                output_dir=str(tmp_path / f"ppo{lora_r}"), total_steps=1, batch_size=4, minibatch_size=2,
                max_new_tokens=6, lora_r=lora_r,
            )
        )
        assert abs(result["history"][0]["objective/kl"]) < 1e-4, lora_r


def test_adapters_name_their_base_absolutely_and_load_from_anywhere(lora_sft_dir, pref_file, tmp_path, monkeypatch):
    sft_cfg = json.loads((lora_sft_dir / "adapter_config.json").read_text())
    assert Path(sft_cfg["base_model_name_or_path"]).is_absolute()
    # a DPO adapter on top of the LoRA SFT policy names that SFT run as its base
    monkeypatch.chdir(tmp_path)
    train_dpo(DPOConfig(model="sft", data=str(pref_file), output_dir="dpo", max_steps=1, batch_size=4, lora_r=2))
    dpo_cfg = json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())
    assert dpo_cfg["base_model_name_or_path"] == os.path.abspath(lora_sft_dir)
    monkeypatch.chdir("/")
    model, _ = load_causal_lm(tmp_path / "dpo")
    assert hasattr(model, "disable_adapter")
