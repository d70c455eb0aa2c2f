"""One end-of-sequence rule for chat data: the RM reads its score at the same token in training and in use (#12 item 4)."""

from __future__ import annotations

import json

import torch

from prefrl.lm.data import load_preferences
from prefrl.lm.encoding import collate_prompt_completion, encode_prompt_completion, pack_preference_pairs
from prefrl.lm.generate import score_responses
from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.reward_functions import RewardModelScorer
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.rollout import RolloutBatch


def _chat_pair(tmp_path):  # noqa: ANN001, ANN202
    row = {
        "prompt": [{"role": "user", "content": "How was the film?"}],
        "chosen": [{"role": "assistant", "content": "Lovely, I laughed a lot."}],
        "rejected": [{"role": "assistant", "content": "Dull."}],
    }
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n")
    _, tok = tiny_causal_lm()
    return load_preferences(tmp_path / "chat.jsonl", tok).examples[0], tok


def test_a_chat_completion_ends_at_its_eos(tmp_path):
    ex, tok = _chat_pair(tmp_path)
    assert ex.chosen.endswith("<|im_end|>\n")  # as the chat template renders it
    for completion in (ex.chosen, "Lovely, I laughed a lot.", "Lovely, I laughed a lot.<|im_end|>"):
        ids, mask = encode_prompt_completion(tok, ex.prompt, completion)
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == ex.prompt.count("<|im_end|>") + 1
        assert mask[-1] == 1


def test_training_time_and_use_time_scores_agree_for_a_chat_pair(tmp_path):
    ex, tok = _chat_pair(tmp_path)
    rm = RewardModel.from_causal_lm(tiny_causal_lm(seed=2)[0], n_heads=2).eval()
    with torch.no_grad():
        # training time: the RM trainer's packed pair (and its two-row fallback), chat-rendered text
        packed = pack_preference_pairs(tok, [ex.prompt], [ex.chosen], [ex.rejected])
        train_packed = rm(packed=packed)  # (2,) chosen, rejected
        b = collate_prompt_completion(tok, [ex.prompt] * 2, [ex.chosen, ex.rejected])
        train_rows = rm(b["input_ids"], b["attention_mask"])
        # use time: PPO's scorer and evaluate/best-of-n see the decoded reply, special tokens removed
        replies = ["Lovely, I laughed a lot.", "Dull."]
        empty = torch.zeros(2, 1, dtype=torch.long)
        batch = RolloutBatch(empty, empty + 1, empty, empty + 1, torch.ones(2, dtype=torch.bool),
                             torch.zeros(2, dtype=torch.long), [ex.prompt] * 2, replies)
        use_ppo = RewardModelScorer(rm, tok)(batch)
        use_eval = score_responses(rm, tok, [ex.prompt] * 2, replies)
    torch.testing.assert_close(train_packed, train_rows, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(use_ppo, train_rows, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(use_eval, train_rows, atol=1e-5, rtol=1e-5)
