"""The reward model is a standard Hugging Face sequence classifier (#12 item 3)."""

from __future__ import annotations

import pytest
import torch

from prefrl.lm.encoding import collate_prompt_completion
from prefrl.lm.models import LoraSpec, tiny_causal_lm
from prefrl.lm.reward_model import RewardModel

PROMPTS = ["Review 1:", "A much longer review prompt:", "x"]
COMPLETIONS = [" good great fine", " bad", " it was a film with actors in it"]


@pytest.mark.parametrize("lora", [None, LoraSpec(r=2, target_modules=("q_proj", "v_proj"))])
def test_auto_model_for_sequence_classification_scores_like_prefrl(tmp_path, lora) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    lm, tok = tiny_causal_lm(seed=0)
    base_dir = tmp_path / "base"
    lm.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    rm = RewardModel.from_causal_lm(lm, n_heads=2, lora=lora, base_name_or_path=base_dir)
    with torch.no_grad():
        rm.head.bias.copy_(torch.tensor([0.3, -0.1]))
        rm.score_mean.copy_(torch.tensor([0.1, 0.4]))
        rm.score_std.copy_(torch.tensor([2.0, 0.5]))
        for n, p in rm.named_parameters():
            if "lora_B" in n:
                p.fill_(0.02)
    rm.eval().save_pretrained(tmp_path / "rm", tokenizer=tok)

    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert hf_tok.pad_token_id != hf_tok.eos_token_id  # HF scores the last token that is not pad
    batch = collate_prompt_completion(hf_tok, PROMPTS, COMPLETIONS)  # right-padded, EOS appended
    with torch.no_grad():
        ours = rm(batch["input_ids"], batch["attention_mask"])  # (B,)
        scores = []
        for _ in range(2):  # the head is loaded, not drawn at random: equal on every load
            hf, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", output_loading_info=True)
            assert info["missing_keys"] in ([], set()) and hf.config.num_labels == 1
            scores.append(hf.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0])
    torch.testing.assert_close(scores[0], scores[1])
    torch.testing.assert_close(scores[0] + hf.config.score_offset, ours, atol=1e-5, rtol=1e-5)
    # margins (what Bradley-Terry, best-of-n and reward benchmarks use) are the same numbers
    torch.testing.assert_close(scores[0][0] - scores[0][1], ours[0] - ours[1], atol=1e-5, rtol=1e-5)
    # and prefrl reloads its own model from the same directory
    again = RewardModel.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch["input_ids"], batch["attention_mask"]), ours)
