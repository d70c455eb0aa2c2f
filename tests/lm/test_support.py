"""The reference-support constraint: masks, violation rates, and constrained generation."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from prefrl.lm.support import ReferenceSupportProcessor, reference_support_mask, support_violation_rate


def test_top_p_and_min_p_masks():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert reference_support_mask(logits, top_p=0.7).tolist() == [[True, True, False, False]]
    assert reference_support_mask(logits, top_p=0.5).tolist() == [[True, False, False, False]]
    assert reference_support_mask(logits, min_p=0.25).tolist() == [[True, True, True, False]]
    assert reference_support_mask(logits, top_p=0.9, min_p=0.5).tolist() == [[True, True, False, False]]
    with pytest.raises(ValueError):
        reference_support_mask(logits)


def test_violation_rate_counts_only_valid_tokens():
    ref_logits = torch.log(torch.tensor([[0.9, 0.05, 0.05]])).expand(2, 3, 3)
    tokens = torch.tensor([[0, 1, 2], [0, 0, 1]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert support_violation_rate(tokens, ref_logits, mask, top_p=0.8) == pytest.approx(2 / 5)


def test_constrained_generation_stays_inside_the_reference_support():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    policy, ref = LlamaForCausalLM(cfg).eval(), LlamaForCausalLM(cfg).eval()
    prompt = torch.tensor([[0, 0, 5, 6], [3, 4, 5, 6]])
    attn = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = policy.generate(
        prompt, attention_mask=attn, do_sample=True, max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
        logits_processor=LogitsProcessorList([ReferenceSupportProcessor(ref, attn, top_p=0.3)]),
    )
    full_mask = torch.cat([attn, torch.ones(2, 8, dtype=torch.long)], 1)
    with torch.no_grad():
        ref_logits = ref(out, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    tokens = out[:, 4:]
    assert support_violation_rate(tokens, ref_logits[:, 3:-1], top_p=0.3) == 0.0
    unconstrained = policy.generate(prompt, attention_mask=attn, do_sample=True, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    with torch.no_grad():
        ref_logits_u = ref(unconstrained, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert support_violation_rate(unconstrained[:, 4:], ref_logits_u[:, 3:-1], top_p=0.3) > 0.0
