from __future__ import annotations

import pytest
import torch

from prefrl.lm.encoding import pad_sequences
from prefrl.lm.models import LoraSpec, tiny_causal_lm
from prefrl.lm.reward_model import RewardModel


def _rm(n_heads: int = 1, lora: LoraSpec | None = None) -> tuple[RewardModel, object]:
    lm, tok = tiny_causal_lm(seed=0)
    return RewardModel.from_causal_lm(lm, n_heads=n_heads, lora=lora).eval(), tok


def test_score_is_read_at_last_non_pad_token_under_both_paddings() -> None:
    rm, tok = _rm()
    eos = tok.eos_token_id
    # the first sequence ENDS in EOS, which is also the pad token: masking pad ids would cut it
    seqs = [tok("a good one")["input_ids"] + [eos], tok("bad")["input_ids"], tok("so-so film!")["input_ids"]]
    ids_r, mask_r = pad_sequences(seqs, tok.pad_token_id, "right")
    ids_l, mask_l = pad_sequences(seqs, tok.pad_token_id, "left")
    with torch.no_grad():
        right, left = rm(ids_r, mask_r), rm(ids_l, mask_l)
        alone = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
        per_token = rm.per_token_scores(ids_r, mask_r)
    assert right.shape == (3,)
    torch.testing.assert_close(right, left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    # the score of row 0 is the per-token score at its EOS, not the token before it
    n0 = len(seqs[0])
    assert torch.isclose(right[0], per_token[0, n0 - 1], atol=1e-6)
    assert not torch.isclose(right[0], per_token[0, n0 - 2], atol=1e-4)


def test_ensemble_members_mean_and_normalisation() -> None:
    rm, tok = _rm(n_heads=3)
    seqs = [tok(t)["input_ids"] for t in ("one", "two words", "three more words", "four", "five!")]
    ids, mask = pad_sequences(seqs, tok.pad_token_id)
    with torch.no_grad():
        members = rm.member_scores(ids, mask)
        assert members.shape == (3, 5)
        torch.testing.assert_close(rm(ids, mask), members.mean(0))
        assert not torch.allclose(members[0], members[1])  # heads differ
        rm.fit_normalisation(ids, mask)
        normed = rm(ids, mask, return_members=True)
    torch.testing.assert_close(normed.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.std(1), torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="raw_member_scores"):
        rm.set_normalisation(torch.zeros(2, 5))


@pytest.mark.parametrize("lora", [None, LoraSpec(r=2, target_modules=("q_proj", "v_proj"))])
def test_save_and_load_roundtrip(tmp_path, lora) -> None:
    rm, tok = _rm(n_heads=2, lora=lora)
    with torch.no_grad():
        rm.head.bias.fill_(0.3)
        rm.score_mean.fill_(0.1)
        rm.score_std.fill_(2.0)
        if lora is not None:
            for n, p in rm.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.02)
    if lora is not None:  # the adapter's base must be loadable by path
        lm, _ = tiny_causal_lm(seed=0)
        base_dir = tmp_path / "base"
        lm.save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
        rm.backbone.peft_config["default"].base_model_name_or_path = str(base_dir)
    rm.save_pretrained(tmp_path / "rm", tokenizer=tok)
    again = RewardModel.from_pretrained(tmp_path / "rm").eval()
    ids, mask = pad_sequences([tok("hello there")["input_ids"]], tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(rm(ids, mask, return_members=True), again(ids, mask, return_members=True))
    assert RewardModel.load_tokenizer(tmp_path / "rm").eos_token == tok.eos_token
