from __future__ import annotations

import math

import pytest
import torch

from prefrl.lm.data import PreferenceExample
from prefrl.lm.dpo import _pair_batch, dpo_batch_metrics, reference_logprobs, train_dpo
from prefrl.lm.dpo_config import DPOConfig
from prefrl.lm.logprobs import completion_logprobs
from prefrl.lm.models import LoraSpec, load_causal_lm
from prefrl.losses import dpo_loss


def test_config_rejects_bad_choices(pref_file) -> None:
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(data=str(pref_file), loss_type="hinge")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(data=str(pref_file), beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(data=str(pref_file), label_smoothing=0.5)
    with pytest.raises(ValueError, match="data"):
        DPOConfig()


def test_dpo_loss_matches_hand_computation() -> None:
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-3.0, -5.0, -4.0, -4.5))
    beta = 0.5
    h = (-3.0 + 4.0) - (-5.0 + 4.5)  # = 1.5
    sigmoid = -math.log(1 / (1 + math.exp(-beta * h)))
    assert dpo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(sigmoid, rel=1e-6)
    s = 0.2
    cdpo = -(1 - s) * math.log(1 / (1 + math.exp(-beta * h))) - s * math.log(1 / (1 + math.exp(beta * h)))
    assert dpo_loss(pc, pr, rc, rr, beta, label_smoothing=s).item() == pytest.approx(cdpo, rel=1e-6)
    assert dpo_loss(pc, pr, rc, rr, beta, loss_type="ipo").item() == pytest.approx(
        (h - 1 / (2 * beta)) ** 2, rel=1e-6
    )
    m = dpo_batch_metrics(pc, pr, rc, rr, beta)
    assert m["rewards/chosen"] == pytest.approx(0.5) and m["rewards/rejected"] == pytest.approx(-0.25)
    assert m["reward/margin"] == pytest.approx(0.75) and m["reward/accuracy"] == 1.0


def test_initial_loss_is_log2_and_lora_reference_is_the_base(tiny_model_dir) -> None:
    base, tok = load_causal_lm(tiny_model_dir)
    policy, _ = load_causal_lm(
        tiny_model_dir, lora=LoraSpec(r=2, dropout=0.0, target_modules=("q_proj", "v_proj"))
    )
    with torch.no_grad():  # move the adapter away from the identity
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    examples = [PreferenceExample("Q1:", " yes", " no"), PreferenceExample("Q2: long", " fine", " bad!")]
    ref = reference_logprobs(policy, tok, examples, max_length=64)  # adapter disabled inside
    base_ref = reference_logprobs(base, tok, examples, max_length=64)
    torch.testing.assert_close(ref, base_ref, atol=1e-5, rtol=1e-5)
    policy.eval()
    with torch.no_grad():
        b = _pair_batch(tok, examples, 64, "cpu")
        lp = completion_logprobs(policy, b["input_ids"], b["attention_mask"], b["completion_mask"])
    assert not torch.allclose(lp, torch.cat([ref[:, 0], ref[:, 1]]), atol=1e-3)  # the adapter is on again
    # policy == reference: h = 0, loss = log 2 for every pair
    init = dpo_loss(base_ref[:, 0], base_ref[:, 1], base_ref[:, 0], base_ref[:, 1], beta=0.1)
    torch.testing.assert_close(init, torch.full((2,), math.log(2.0)))


def test_dpo_training_starts_at_log2_and_raises_the_margin(tiny_model_dir, pref_file, tmp_path) -> None:
    res = train_dpo(
        DPOConfig(
            model=str(tiny_model_dir),
            data=str(pref_file),
            output_dir=str(tmp_path),
            max_steps=6,
            batch_size=4,
            learning_rate=1e-3,
            beta=0.5,
        )
    )
    h = res["history"]
    assert h[0]["loss/dpo"] == pytest.approx(math.log(2.0), abs=1e-5)
    assert h[-1]["loss/dpo"] < h[0]["loss/dpo"] - 0.05
    assert h[-1]["reward/margin"] > 0 and h[-1]["reward/accuracy"] == 1.0
    assert (tmp_path / "ref_logps.pt").exists()
