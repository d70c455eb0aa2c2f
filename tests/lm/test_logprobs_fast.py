"""The fast log-prob and reward paths (LM head only where scored, packed preference pairs)
against the plain computation: full logits → log_softmax → gather, one row per response."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import prefrl.lm.logprobs as common
from prefrl.lm.data import PreferenceExample
from prefrl.lm.dpo import pair_logprobs
from prefrl.lm.encoding import collate_prompt_completion, pack_preference_pairs, position_ids_from_mask
from prefrl.lm.logprobs import completion_logprobs, packed_pair_logprobs
from prefrl.lm.models import LoraSpec, tiny_causal_lm
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.training import make_adamw
from prefrl.losses import dpo_loss

PROMPTS = ["Q: hi", "Q: a much longer prompt, with more tokens", "x"]
CHOSEN = [" yes", " no way at all", ""]
REJECTED = [" nope, nope", " ok", " a rather long rejected answer"]


def plain_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) Σ over completion tokens of log_softmax(full logits)[next token], one row per response."""
    ids, mask, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logp = torch.log_softmax(logits[:, :-1].double(), -1)  # (B, T-1, V)
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (picked * (cmask[:, 1:] * mask[:, 1:])).sum(-1)


def two_row_batch(tok, prompts=PROMPTS, chosen=CHOSEN, rejected=REJECTED, max_length=64, side="right"):  # noqa: ANN001, ANN201
    return collate_prompt_completion(tok, list(prompts) * 2, list(chosen) + list(rejected), max_length, side)


@pytest.mark.parametrize("side", ["right", "left"])
def test_completion_logprobs_equals_log_softmax_gather(side: str) -> None:
    model, tok = tiny_causal_lm()
    model.eval()
    b = two_row_batch(tok, side=side)
    with torch.no_grad():
        ref = plain_logprobs(model, b)
        fast = completion_logprobs(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
        avg = completion_logprobs(
            model, b["input_ids"], b["attention_mask"], b["completion_mask"], average=True
        )
    torch.testing.assert_close(fast.double(), ref, atol=1e-4, rtol=1e-6)
    n_tokens = (b["completion_mask"][:, 1:] * b["attention_mask"][:, 1:]).sum(-1)
    torch.testing.assert_close(avg.double(), ref / n_tokens, atol=1e-5, rtol=1e-6)


def test_completion_logprobs_without_masked_logits_to_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older transformers: all logits are computed and the scored rows picked afterwards."""
    model, tok = tiny_causal_lm()
    model.eval()
    b = two_row_batch(tok)
    with torch.no_grad():
        fast = completion_logprobs(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
        monkeypatch.setattr(common, "_has_masked_logits_to_keep", lambda: False)
        slow = completion_logprobs(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
        packed = packed_pair_logprobs(model, pack_preference_pairs(tok, PROMPTS, CHOSEN, REJECTED, 64))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(packed, slow, atol=1e-4, rtol=1e-6)


def test_packed_pairs_layout() -> None:
    _, tok = tiny_causal_lm()
    pk = pack_preference_pairs(tok, ["ab", "c"], [" d", " ef"], [" g", ""])
    assert pk is not None
    eos = tok.eos_token_id
    # prompts left-padded to 2 columns; then chosen, rejected, right padding; each response ends in EOS
    assert pk["input_ids"].shape == (2, 2 + max(3 + 3, 4 + 1))
    assert tok.decode(pk["input_ids"][0, :8]) == "ab d" + tok.eos_token + " g" + tok.eos_token
    assert pk["position_ids"][0, :8].tolist() == [
        0,
        1,
        2,
        3,
        4,
        2,
        3,
        4,
    ]  # rejected restarts after the prompt
    allowed = pk["attention_allowed"][0, 0]
    assert not allowed[5, 2:5].any() and allowed[5, :2].all() and allowed[5, 5]  # blind to the chosen tokens
    assert pk["last_col"].tolist() == [4, 5, 7, 6]  # chosen rows, then rejected rows
    assert int(pk["input_ids"][1, pk["last_col"][3]]) == eos  # "" + EOS
    assert pk["target_seq"].tolist().count(0) == 3 and pk["target_seq"].tolist().count(3) == 1


def test_packed_pair_logprobs_and_gradients_equal_two_rows() -> None:
    model, tok = tiny_causal_lm()
    model.eval()
    twin = copy.deepcopy(model)
    b = two_row_batch(tok)
    pk = pack_preference_pairs(tok, PROMPTS, CHOSEN, REJECTED, 64)
    assert pk is not None and pk["input_ids"].numel() < b["input_ids"].numel()
    weights = torch.linspace(-1.0, 1.0, 2 * len(PROMPTS))
    packed = packed_pair_logprobs(model, pk)
    plain = plain_logprobs(twin, b)
    torch.testing.assert_close(packed.double(), plain, atol=1e-4, rtol=1e-6)
    (packed * weights).sum().backward()
    (plain.float() * weights).sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=2e-5, rtol=1e-4, msg=name)


def test_split_prompt_falls_back_to_two_rows() -> None:
    model, tok = tiny_causal_lm()
    model.eval()
    rows = [PreferenceExample("a long prompt here", " short", " a much longer rejected response")]
    # max_length 24 cuts the prompt for the long response only: the two prompts differ
    assert pack_preference_pairs(tok, [rows[0].prompt], [rows[0].chosen], [rows[0].rejected], 24) is None
    with torch.no_grad():
        lp = pair_logprobs(model, tok, rows, 24, "cpu")
        ref = plain_logprobs(
            model, two_row_batch(tok, [rows[0].prompt], [rows[0].chosen], [rows[0].rejected], 24)
        )
    torch.testing.assert_close(lp.double(), ref, atol=1e-4, rtol=1e-6)


def test_packed_logprobs_with_lora() -> None:
    from peft import get_peft_model

    base, tok = tiny_causal_lm()
    model = get_peft_model(base, LoraSpec(r=2, dropout=0.0, target_modules=("q_proj", "v_proj")).to_peft())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    with torch.no_grad():
        packed = packed_pair_logprobs(model, pack_preference_pairs(tok, PROMPTS, CHOSEN, REJECTED, 64))
        plain = plain_logprobs(model, two_row_batch(tok))
    torch.testing.assert_close(packed.double(), plain, atol=1e-4, rtol=1e-6)


def test_dpo_loss_of_packed_logprobs_matches_float64_reference() -> None:
    """The whole DPO loss (policy ≠ reference) to 1e-5 against a float64 plain computation."""
    policy, tok = tiny_causal_lm(seed=0)
    ref, _ = tiny_causal_lm(seed=1)
    rows = [PreferenceExample(p, c, r) for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)]
    with torch.no_grad():
        pol, rf = (pair_logprobs(m.eval(), tok, rows, 64, "cpu") for m in (policy, ref))
        ours = dpo_loss(*pol.chunk(2), *rf.chunk(2), beta=0.1).mean()
        b = two_row_batch(tok)
        pol64, rf64 = (plain_logprobs(copy.deepcopy(m).double(), b) for m in (policy, ref))
    h = (pol64[:3] - rf64[:3]) - (pol64[3:] - rf64[3:])
    expected = float(torch.nn.functional.softplus(-0.1 * h).mean())  # −log σ(β h)
    assert not math.isclose(expected, math.log(2), abs_tol=1e-3)
    assert float(ours) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("n_heads", [1, 3])
def test_reward_pair_scores_equal_two_rows(n_heads: int) -> None:
    lm, tok = tiny_causal_lm()
    rm = RewardModel.from_causal_lm(lm, n_heads=n_heads, seed=3).eval()
    b = two_row_batch(tok)
    pk = pack_preference_pairs(tok, PROMPTS, CHOSEN, REJECTED, 64)
    with torch.no_grad():
        plain = rm.member_scores(b["input_ids"], b["attention_mask"], normalize=False)  # (M, 2B)
        packed = rm(packed=pk, return_members=True, normalize=False)
        mean = rm(packed=pk)
    assert packed.shape == (n_heads, 2 * len(PROMPTS))
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean, rm(b["input_ids"], b["attention_mask"]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="packed"):
        rm()


def test_fused_adamw_matches_default_adamw() -> None:
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a = make_adamw(a, 1e-2, 0.01)
    opt_b = torch.optim.AdamW(b, lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        for p, q in zip(a, b):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_response_logprobs_fast_path_equals_log_softmax_path() -> None:
    """PPO's minibatch log-probs (gather − logsumexp) equal the log-softmax path that also gives entropy."""
    from prefrl.lm.logprobs import response_logprobs

    torch.manual_seed(0)
    model = tiny_causal_lm()[0].eval()
    ids = torch.randint(3, model.config.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding of the prompt
    with torch.no_grad():
        fast, no_entropy = response_logprobs(model, ids, mask, n_query=4, temperature=0.7)
        slow, entropy = response_logprobs(model, ids, mask, n_query=4, temperature=0.7, with_entropy=True)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        ref = torch.log_softmax(logits[:, 3:-1].double() / 0.7, -1).gather(-1, ids[:, 4:, None]).squeeze(-1)
    assert no_entropy is None and entropy is not None and entropy.shape == (3, 5)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.double(), ref, atol=1e-5, rtol=0)


def test_target_logprob_backward_equals_log_softmax_autograd():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 40, generator=g) * 3  # float32, as the logits are scored
    labels = torch.randint(0, 40, (3, 5), generator=g)
    upstream = torch.randn(3, 5, generator=g)
    a = logits.clone().requires_grad_(True)
    out = common.logprobs_from_logits(a, labels)
    (out * upstream).sum().backward()
    b = logits.clone().requires_grad_(True)
    ref = torch.log_softmax(b, -1).gather(-1, labels[..., None]).squeeze(-1)
    (ref * upstream).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_and_their_gradients_equal_the_plain_computation(temperature):
    torch.manual_seed(0)
    policy, _ = tiny_causal_lm(seed=0)
    policy.eval()
    ids = torch.randint(3, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    mask[2, -3:] = 0  # a response that ended early
    p = 4
    lp, _ = common.response_logprobs(policy, ids, mask, p, temperature)
    weights = torch.linspace(-1.0, 1.0, lp.numel()).view_as(lp)
    (lp * weights).sum().backward()
    fast = [q.grad.clone() for q in policy.parameters()]
    policy.zero_grad()
    logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    plain = torch.log_softmax(logits[:, p - 1 : -1].float() / temperature, -1).gather(-1, ids[:, p:, None]).squeeze(-1)
    (plain * weights).sum().backward()
    torch.testing.assert_close(lp, plain, atol=1e-5, rtol=0)
    for a, b in zip(fast, (q.grad for q in policy.parameters()), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_decoding_linears_are_the_same_linears_and_are_restored():
    from prefrl.lm.rollout import _tall_linears

    policy, _ = tiny_causal_lm(seed=0)
    linears = [m for m in policy.modules() if type(m) is torch.nn.Linear]
    assert policy.get_output_embeddings() in linears and len(linears) > 1
    for lin in linears:
        if lin.bias is None:  # a bias term is exercised too
            lin.bias = torch.nn.Parameter(torch.randn(lin.out_features))
            break
    h = {lin: torch.randn(8, 1, lin.in_features) for lin in linears}
    with torch.no_grad(), _tall_linears(policy):
        assert all("forward" in vars(lin) for lin in linears)  # swapped for the loop
        tall = {lin: lin(x) for lin, x in h.items()}
    assert all("forward" not in vars(lin) for lin in linears)  # and restored
    for lin, x in h.items():
        assert tall[lin].is_contiguous()
        torch.testing.assert_close(tall[lin], torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError), _tall_linears(policy):
        raise RuntimeError("a failure inside the loop")
    assert all("forward" not in vars(lin) for lin in linears)


def test_decoding_linears_leave_a_replaced_forward_alone():
    """A Linear whose forward is already an instance attribute (accelerate's hooks do this) keeps it."""
    from prefrl.lm.rollout import _tall_linears

    policy, _ = tiny_causal_lm(seed=0)
    head = policy.get_output_embeddings()
    hooked = head.forward  # the bound nn.Linear.forward, set as an instance attribute as a hook would be
    head.forward = hooked
    with torch.no_grad(), _tall_linears(policy):
        assert vars(head)["forward"] is hooked
    assert vars(head)["forward"] is hooked
