"""The shared loops own their randomness, stop on request and log through one sink (#11 item 5)."""

from __future__ import annotations

import copy
import json

import torch

from prefrl.lm.models import load_causal_lm, tiny_causal_lm
from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer
from prefrl.lm.reward_functions import TokenFrequencyReward
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.sft import train_sft
from prefrl.lm.sft_config import SFTConfig

PROMPTS = ["hello", "the cat sat", "x", "a good film because"]


def _ppo_trainer(seed: int = 0) -> LMPPOTrainer:
    policy, tok = tiny_causal_lm(seed=0)
    critic = RewardModel.from_causal_lm(tiny_causal_lm(seed=1)[0])
    cfg = LMPPOConfig(batch_size=4, minibatch_size=2, update_epochs=1, max_new_tokens=6, seed=seed)
    reward = TokenFrequencyReward(tok.convert_tokens_to_ids("a"), "token")
    return LMPPOTrainer(policy, copy.deepcopy(policy), critic, reward, tok, cfg)


def test_sft_and_ppo_leave_the_global_rng_alone(tiny_model_dir, sft_file, tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train_sft(
        SFTConfig(
            model=str(tiny_model_dir), data=str(sft_file), output_dir=str(tmp_path / "sft"), max_steps=2,
            batch_size=2, lora_r=2, lora_dropout=0.3,
        )
    )
    trainer = _ppo_trainer()
    trainer.train(PROMPTS, total_steps=1, checkpoint_dir=tmp_path / "ppo", progress=False)
    trainer.load_checkpoint(tmp_path / "ppo")
    assert torch.equal(torch.get_rng_state(), before)


def test_lora_dropout_resume_is_bit_exact(tiny_model_dir, sft_file, tmp_path):
    """Dropout draws from the run's own stream, which the checkpoint carries: 2 + 2 steps == 4 steps."""
    kw = {
        "model": str(tiny_model_dir), "data": str(sft_file), "max_steps": 4, "batch_size": 2,
        "learning_rate": 1e-3, "lora_r": 2, "lora_dropout": 0.5,
    }
    straight = train_sft(SFTConfig(output_dir=str(tmp_path / "a"), save_every=2, **kw))
    torch.manual_seed(999)  # whatever the caller does to the global RNG in between
    resumed = train_sft(SFTConfig(output_dir=str(tmp_path / "b"), resume=str(tmp_path / "a" / "checkpoint-2"), **kw))
    assert [h["loss/sft"] for h in straight["history"][2:]] == [h["loss/sft"] for h in resumed["history"]]
    a, b = load_causal_lm(tmp_path / "a")[0], load_causal_lm(tmp_path / "b")[0]
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), k


def test_lora_init_is_seeded_and_private():
    from prefrl.lm.models import LoraSpec, add_lora

    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = add_lora(tiny_causal_lm()[0], LoraSpec(r=2), seed=3)
    b = add_lora(tiny_causal_lm()[0], LoraSpec(r=2), seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_stop_ends_the_training_loops(tiny_model_dir, sft_file, tmp_path):
    trainer = _ppo_trainer()
    history = trainer.train(
        PROMPTS, total_steps=5, log_path=tmp_path / "ppo.jsonl", checkpoint_dir=tmp_path / "ppo",
        stop=lambda m: m["step"] >= 2, progress=False,
    )
    assert trainer.global_step == 2 and len(history) == 2
    assert len((tmp_path / "ppo.jsonl").read_text().splitlines()) == 2
    assert torch.load(tmp_path / "ppo" / "trainer_state.pt", weights_only=False)["global_step"] == 2

    from prefrl.lm.sft import train_sft as sft
    from prefrl.lm.training import run_training  # noqa: F401 - the loop train_sft runs

    result = sft(SFTConfig(model=str(tiny_model_dir), data=str(sft_file), output_dir=str(tmp_path / "s"),
                           max_steps=6, batch_size=2))
    assert result["step"] == 6
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_run_training_stop_writes_the_final_checkpoint(tiny_model_dir, sft_file, tmp_path):
    from prefrl.lm.training import TRAINING_STATE_FILE, run_training

    model, tok = load_causal_lm(tiny_model_dir)
    saves = []

    def loss_fn(m, idx, device):  # noqa: ANN001, ANN202
        ids = torch.tensor([[1, 2, 3, 4]], device=device)
        loss = m(input_ids=ids, labels=ids).loss
        return loss, {"loss/lm": loss.item()}

    def save_fn(m, d, final):  # noqa: ANN001, ANN202
        saves.append((d.name, final))
        m.save_pretrained(d)

    cfg = SFTConfig(model=str(tiny_model_dir), data=str(sft_file), output_dir=str(tmp_path / "r"), max_steps=10,
                    batch_size=2, save_every=2)
    result = run_training(cfg, model, 8, loss_fn, save_fn, "t", stop=lambda row: row["step"] >= 3)
    assert result["step"] == 3
    assert saves == [("checkpoint-2", False), ("r", True)]
    assert torch.load(tmp_path / "r" / TRAINING_STATE_FILE, weights_only=False)["step"] == 3
