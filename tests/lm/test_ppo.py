"""LM PPO on tiny random models: invariants at step one, learning a toy reward, EOS handling, resume."""

from __future__ import annotations

import copy

import pytest
import torch

from prefrl.lm.models import LoraSpec, tiny_causal_lm
from prefrl.lm.ppo import METRIC_NAMES, LMPPOConfig, LMPPOTrainer
from prefrl.lm.reward_functions import TokenFrequencyReward
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.rollout import find_first_eos, sample_responses

PROMPTS = ["hello", "the cat sat", "x", "a good film because", "b", "review:", "yes", "ok then"]


def make_trainer(reward_fn=None, ref="copy", lora=False, **cfg_kwargs) -> LMPPOTrainer:
    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=0)
    if lora:
        from peft import get_peft_model

        policy = get_peft_model(policy, LoraSpec(r=4, alpha=8, dropout=0.0).to_peft())
    critic = RewardModel.from_causal_lm(tiny_causal_lm(seed=1)[0])
    ref_policy = copy.deepcopy(policy) if ref == "copy" else None
    defaults = dict(
        batch_size=8, minibatch_size=4, max_new_tokens=10, temperature=1.0, learning_rate=3e-3, update_epochs=2
    )
    defaults.update(cfg_kwargs)
    if reward_fn is None:
        reward_fn = TokenFrequencyReward(tok.convert_tokens_to_ids("a"), "token")
    return LMPPOTrainer(policy, ref_policy, critic, reward_fn, tok, LMPPOConfig(**defaults))


@pytest.mark.parametrize("ref, lora", [("copy", False), (None, False), (None, True)])
def test_reference_equal_to_policy_gives_zero_kl_and_unit_ratio(ref, lora):
    trainer = make_trainer(ref=ref, lora=lora, kl_coef=0.1)
    metrics = trainer.step(PROMPTS)
    assert set(METRIC_NAMES) <= set(metrics)
    assert abs(metrics["objective/kl"]) < 1e-4
    assert abs(metrics["objective/non_score_reward"]) < 1e-5
    first = trainer.last_minibatch_stats[0]
    assert first["policy/approx_kl"] < 1e-9
    assert first["policy/clipfrac"] == 0.0
    # the update moved the policy away from the reference, so the second step sees KL
    assert trainer.step(PROMPTS)["objective/kl_token"] != 0.0


@torch.no_grad()
def _mean_reward(trainer: LMPPOTrainer, token_id: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    batch = sample_responses(
        trainer.policy, trainer.tokenizer, PROMPTS * 4, max_new_tokens=10, temperature=1.0, generator=g
    )
    hits = (batch.response_ids == token_id).float() * batch.response_mask
    return float(hits.sum(1).mean())


@pytest.mark.parametrize("granularity", ["token", "sequence"])
def test_ppo_learns_to_emit_a_token(granularity):
    _, tok = tiny_causal_lm()
    x = tok.convert_tokens_to_ids("a")
    reward = TokenFrequencyReward(x, granularity, value=1.0 if granularity == "token" else 10.0)
    trainer = make_trainer(reward, kl_coef=0.0)
    before = _mean_reward(trainer, x, seed=123)
    for _ in range(35):  # the tiny model takes off after ~25 steps (1.06 at 25, 9.8 at 35)
        trainer.step(PROMPTS)
    after = _mean_reward(trainer, x, seed=123)
    assert after > before + 1.0, (before, after)


def test_kl_penalty_is_in_the_reward():
    trainer = make_trainer(kl_coef=0.5, kl_estimator="k3")
    trainer.step(PROMPTS)
    m = trainer.step(PROMPTS)
    assert m["objective/kl"] > 0  # k3 ≥ 0 and the policy moved
    assert m["objective/non_score_reward"] == pytest.approx(-0.5 * m["objective/kl"], rel=1e-4)
    assert m["objective/rlhf_reward"] == pytest.approx(
        m["objective/scores"] + m["objective/non_score_reward"], rel=1e-4
    )
    assert m["objective/kl_seq_max"] >= m["objective/kl"]


def test_adaptive_controller_moves_beta():
    # k2 = ½(log π − log π_ref)² is never negative, so the second step's KL is above a tiny target
    # whatever the eight samples are (k1 on eight samples can come out negative)
    trainer = make_trainer(
        kl_control="adaptive", kl_coef=0.1, kl_target=1e-3, kl_horizon=10, kl_estimator="k2"
    )
    trainer.step(PROMPTS)
    m = trainer.step(PROMPTS)
    # β ← β·(1 + 0.1·e·n/horizon), e = clip((KL − target)/target, ±0.2), n = 8: step one has KL = 0 (e = −0.2)
    assert m["objective/kl_coef"] == pytest.approx(0.1 * (1 - 0.1 * 0.2 * 8 / 10))
    assert m["objective/kl"] > 1.2e-3  # step two has KL above target (e = +0.2)
    assert trainer.kl_controller.value == pytest.approx(m["objective/kl_coef"] * (1 + 0.1 * 0.2 * 8 / 10))


def test_eos_found_as_first_generated_eos_even_when_pad_is_eos():
    _, tok = tiny_causal_lm()
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos
    a = tok.convert_tokens_to_ids("a")
    resp = torch.tensor([[a, a, eos, eos, eos], [a, a, a, a, a], [eos, eos, eos, eos, eos]])
    has_eos, last, mask = find_first_eos(resp, eos)
    assert has_eos.tolist() == [True, False, True]
    assert last.tolist() == [2, 4, 0]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_sampled_responses_are_cut_at_first_eos():
    policy, tok = tiny_causal_lm(seed=0)
    eos = tok.eos_token_id
    with torch.no_grad():  # make EOS likely so that some rows end early
        policy.lm_head.weight[eos] += 3.0 * policy.model.norm.weight.sign()
    batch = sample_responses(
        policy, tok, PROMPTS, max_new_tokens=12, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert batch.has_eos.any() and (batch.response_mask.sum(1) < 12).any()
    for row, last, has, m in zip(
        batch.response_ids, batch.last_index, batch.has_eos, batch.response_mask, strict=True
    ):
        assert int(m.sum()) == int(last) + 1
        assert (row[:last] != eos).all()  # no EOS before the last valid token
        assert bool(row[last] == eos) == bool(has)
    # the prompts are left-padded
    assert (batch.query_mask[:, -1] == 1).all()


def test_missing_eos_penalty_is_applied():
    zero = lambda batch: torch.zeros(len(batch))  # noqa: E731
    trainer = make_trainer(zero, max_new_tokens=3, missing_eos_penalty=2.0)
    m = trainer.step(PROMPTS)
    n_no_eos = 8 - m["val/num_eos_tokens"]
    assert n_no_eos > 0
    assert m["objective/scores"] == pytest.approx(-2.0 * n_no_eos / 8)


def test_sampling_is_reproducible_from_the_seed():
    a, b = make_trainer(seed=7), make_trainer(seed=7)
    ra, rb = a.rollout(PROMPTS), b.rollout(PROMPTS)
    assert torch.equal(ra.response_ids, rb.response_ids)
    assert not torch.equal(ra.response_ids, make_trainer(seed=8).rollout(PROMPTS).response_ids)


def test_resume_continues_counters_optimiser_and_rng(tmp_path):
    straight = make_trainer(kl_control="adaptive", kl_target=0.5)
    for _ in range(3):
        straight.step(PROMPTS)

    first = make_trainer(kl_control="adaptive", kl_target=0.5)
    for _ in range(2):
        first.step(PROMPTS)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = make_trainer(kl_control="adaptive", kl_target=0.5)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.global_step == 2 and resumed.n_samples == 16
    assert resumed.kl_controller.value == first.kl_controller.value
    assert (
        resumed.policy_optimizer.state_dict()["state"][0]["step"] == 2 * 2 * 2
    )  # steps × epochs × minibatches
    resumed.step(PROMPTS)
    for p_s, p_r in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(p_s, p_r)
    for p_s, p_r in zip(straight.critic.parameters(), resumed.critic.parameters(), strict=True):
        torch.testing.assert_close(p_s, p_r)


def test_train_runs_to_total_steps_and_logs(tmp_path):
    trainer = make_trainer()
    history = trainer.train(
        PROMPTS * 2, total_steps=2, log_path=tmp_path / "log.jsonl", checkpoint_dir=tmp_path / "c"
    )
    assert len(history) == 2 and trainer.global_step == 2
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "c" / "policy" / "config.json").exists()
    assert trainer.train(PROMPTS, total_steps=2) == []  # already there


def test_bad_inputs_raise():
    trainer = make_trainer()
    with pytest.raises(ValueError, match="batch_size"):
        trainer.step(PROMPTS[:3])
    with pytest.raises(ValueError, match="mini_batch_size"):
        LMPPOConfig(batch_size=8, minibatch_size=3)
    with pytest.raises(ValueError, match="kl_estimator"):
        LMPPOConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="kl_control"):
        LMPPOConfig(kl_control="pid")
    with pytest.raises(ValueError, match="temperature"):
        LMPPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match="unknown LMPPOConfig"):
        LMPPOConfig.from_dict({"batch_size": 8, "lr": 1.0})
    bad = make_trainer(lambda batch: torch.zeros(3))
    with pytest.raises(ValueError, match="per sequence"):
        bad.step(PROMPTS)


def test_freeze_all_but_top_layers_stops_backward_there():
    from prefrl.lm.ppo import freeze_all_but_top_layers

    policy, _ = tiny_causal_lm(seed=0)
    n = freeze_all_but_top_layers(policy, 1)
    trainable = {k for k, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(k.startswith("model.layers.1.") or k == "model.norm.weight" for k in trainable)
    assert n == sum(p.numel() for p in policy.parameters() if p.requires_grad)
    critic = RewardModel.from_causal_lm(tiny_causal_lm(seed=1)[0])
    freeze_all_but_top_layers(critic, 2)
    assert critic.head.weight.requires_grad
    with pytest.raises(ValueError, match="decoder layers"):
        freeze_all_but_top_layers(policy, 3)
    with pytest.raises(ValueError, match="positive"):
        freeze_all_but_top_layers(policy, 0)


def test_sampler_records_the_policy_logprobs_and_entropy_it_sampled_from():
    from prefrl.lm.logprobs import response_logprobs

    policy, tok = tiny_causal_lm(seed=0)
    policy.eval()
    eos = tok.eos_token_id
    with torch.no_grad():  # some rows end early, so the mask past EOS is exercised
        policy.lm_head.weight[eos] += 2.0 * policy.model.norm.weight.sign()
    g = torch.Generator().manual_seed(0)
    batch = sample_responses(policy, tok, PROMPTS, max_new_tokens=12, temperature=0.7, generator=g)
    assert batch.logprobs is not None and batch.entropy is not None
    assert batch.has_eos.any() and (batch.query_mask == 0).any()  # left padding and early EOS both present
    with torch.no_grad():
        lp, ent = response_logprobs(
            policy, batch.input_ids, batch.attention_mask, batch.n_query, 0.7, with_entropy=True
        )
    m = batch.response_mask.bool()
    torch.testing.assert_close(batch.logprobs[m], lp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.entropy[m], ent[m], atol=1e-5, rtol=0)
    assert (batch.logprobs[~m] == 0).all() and (batch.entropy[~m] == 0).all()
    # top-k sampling goes through generate and leaves the scoring to the caller
    topk = sample_responses(policy, tok, PROMPTS, max_new_tokens=4, temperature=1.0, top_k=5, generator=g)
    assert topk.logprobs is None


@pytest.mark.parametrize("k", [1, 3])
def test_sampler_draws_the_tokens_of_a_cache_free_replay(k):
    """The KV-cached sampler (prefix sharing for k > 1, the decoding-time linears) draws, for a seed, the
    tokens that a plain replay draws: each step a full forward of prompt ‖ tokens so far, its softmax at the
    temperature, and the same inverse-CDF draw from the same generator stream."""
    from prefrl.lm.encoding import position_ids_from_mask
    from prefrl.lm.rollout import _inverse_cdf_sample

    policy, tok = tiny_causal_lm(seed=0)
    policy.eval()
    eos = tok.eos_token_id
    with torch.no_grad():  # some rows end early: finished rows keep emitting EOS
        policy.lm_head.weight[eos] += 1.5 * policy.model.norm.weight.sign()
    batch = sample_responses(
        policy, tok, PROMPTS, max_new_tokens=10, temperature=0.8, generator=torch.Generator().manual_seed(3),
        num_generations=k,
    )
    assert batch.has_eos.any() and not batch.has_eos.all()
    g = torch.Generator().manual_seed(3)
    ids, mask = batch.query_ids, batch.query_mask  # (B·k, P): the prompts repeated k times
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(batch.response_ids.shape[1]):
            logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
            token = _inverse_cdf_sample(torch.softmax(logits[:, -1].float() / 0.8, -1), g)
            token = torch.where(finished, torch.full_like(token, eos), token)
            finished |= token == eos
            ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    assert torch.equal(ids[:, batch.n_query :], batch.response_ids)


def test_sampler_draws_from_the_softmax():
    policy, tok = tiny_causal_lm(seed=0)
    policy.eval()
    n = 4000
    g = torch.Generator().manual_seed(1)
    batch = sample_responses(policy, tok, ["the cat"] * n, max_new_tokens=1, temperature=1.0, generator=g)
    first = batch.response_ids[:, 0]
    probs = batch.logprobs[0, 0].exp()  # every row has the same first-token distribution
    with torch.no_grad():
        q, qm = batch.query_ids[:1], batch.query_mask[:1]
        logits = policy(input_ids=q, attention_mask=qm).logits[0, -1]
    p = torch.softmax(logits, -1)
    assert float(p[first[0]]) == pytest.approx(float(probs), abs=1e-5)
    freq = torch.bincount(first, minlength=p.numel()).float() / n
    assert float((freq - p).abs().max()) < 4 * float((p * (1 - p) / n).sqrt().max()) + 1e-3


def test_inverse_cdf_sampling_matches_the_probabilities_and_skips_zeros():
    from prefrl.lm.rollout import _inverse_cdf_sample

    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).repeat(20000, 1)
    draws = _inverse_cdf_sample(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert freq[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)


# ---- one epoch of one minibatch: the scoring pass's critic forward serves the update too
def _one_step(monkeypatch, reuse: bool, **cfg):
    monkeypatch.setattr(LMPPOTrainer, "values_from_scoring", property(lambda self: reuse and self.cfg.update_epochs == 1))
    trainer = make_trainer(kl_coef=0.1, **cfg)
    calls = []
    real = trainer.critic.per_token_scores

    def counting(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(torch.is_grad_enabled())
        return real(*a, **kw)

    monkeypatch.setattr(trainer.critic, "per_token_scores", counting)  # this critic only
    metrics = trainer.step(PROMPTS)
    weights = [torch.cat([q.detach().flatten() for q in m.parameters()]) for m in (trainer.policy, trainer.critic)]
    return metrics, weights, calls


def test_one_epoch_one_minibatch_runs_the_critic_once_with_the_same_update(monkeypatch):
    cfg = dict(update_epochs=1, minibatch_size=8)  # the whole batch of 8 as one minibatch
    m_reuse, w_reuse, calls_reuse = _one_step(monkeypatch, True, **cfg)
    m_twice, w_twice, calls_twice = _one_step(monkeypatch, False, **cfg)
    assert calls_reuse == [True] and calls_twice == [False, True]  # scoring (+ update) forwards of the critic
    for key in ("loss/value", "loss/policy", "val/explained_variance", "policy/approx_kl"):
        assert m_reuse[key] == pytest.approx(m_twice[key], abs=1e-6)
    for a, b in zip(w_reuse, w_twice, strict=True):  # the same updated policy and critic
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_several_minibatches_or_epochs_keep_a_fresh_critic_forward_per_minibatch():
    trainer = make_trainer(update_epochs=1, minibatch_size=4)
    assert not trainer.values_from_scoring
    assert not make_trainer(update_epochs=2, minibatch_size=8).values_from_scoring
    assert make_trainer(update_epochs=1, minibatch_size=8).values_from_scoring
