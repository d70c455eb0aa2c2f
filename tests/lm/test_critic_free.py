"""GRPO, RLOO and REINFORCE++ on tiny random models: invariants at step one, learning a toy reward,
resume, loadable checkpoints, and the per-token loss against an independent computation."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefrl.lm.critic_free import METRIC_NAMES, CriticFreeConfig, CriticFreeTrainer
from prefrl.lm.logprobs import response_logprobs
from prefrl.lm.models import LoraSpec, tiny_causal_lm
from prefrl.lm.rollout import sample_responses

PROMPTS = ["hello", "the cat sat", "x", "a good film because"]
ALGOS = ["grpo", "rloo", "reinforce++"]
TARGET = torch.arange(97, 123)  # the bytes a–z: about 1 in 10 tokens of the random tiny model


def target_hits(batch) -> torch.Tensor:
    """(B,) number of valid response tokens that are a lowercase letter."""
    return (torch.isin(batch.response_ids, TARGET).float() * batch.response_mask.float()).sum(1)


def toy_reward(batch) -> torch.Tensor:
    """A dense toy reward with a known optimum: the fraction of response tokens that are a–z."""
    return target_hits(batch) / batch.response_mask.float().sum(1).clamp(min=1.0)


def make_trainer(algo="grpo", reward_fn=None, ref="copy", lora=False, **cfg_kwargs) -> CriticFreeTrainer:
    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=0)
    if lora:
        from peft import get_peft_model

        policy = get_peft_model(policy, LoraSpec(r=4, alpha=8, dropout=0.0).to_peft())
    ref_policy = copy.deepcopy(policy) if ref == "copy" else None
    defaults = dict(
        algo=algo, batch_size=4, num_generations=4, minibatch_size=8, max_new_tokens=10,
        temperature=1.0, learning_rate=3e-3, update_epochs=2,
    )  # fmt: skip
    defaults.update(cfg_kwargs)
    if reward_fn is None:
        reward_fn = toy_reward
    return CriticFreeTrainer(policy, ref_policy, reward_fn, tok, CriticFreeConfig(**defaults))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("ref, lora, kl_penalty", [("copy", False, "reward"), (None, True, "loss")])
def test_reference_equal_to_policy_gives_zero_kl_and_unit_ratio(algo, ref, lora, kl_penalty):
    trainer = make_trainer(algo, ref=ref, lora=lora, kl_coef=0.1, kl_penalty=kl_penalty, kl_estimator="k3")
    metrics = trainer.step(PROMPTS)
    assert set(METRIC_NAMES) <= set(metrics)
    assert "val/explained_variance" not in metrics and "loss/value" not in metrics  # no critic
    assert abs(metrics["objective/kl"]) < 1e-4 and abs(metrics["objective/kl_token"]) < 1e-5
    assert abs(metrics["objective/non_score_reward"]) < 1e-5
    first = trainer.last_minibatch_stats[0]
    assert first["policy/approx_kl"] < 1e-9  # ratio exactly 1 before the first update
    assert first["policy/clipfrac"] == 0.0
    assert trainer.step(PROMPTS)["objective/kl_token"] != 0.0  # the update moved the policy


def test_k_completions_per_prompt_are_adjacent_rows():
    trainer = make_trainer(num_generations=3, minibatch_size=4)
    batch = trainer.rollout(PROMPTS)
    assert batch.prompts == [p for p in PROMPTS for _ in range(3)]


@torch.no_grad()
def _mean_reward(trainer: CriticFreeTrainer, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    batch = sample_responses(
        trainer.policy, trainer.tokenizer, PROMPTS * 8, max_new_tokens=10, temperature=1.0, generator=g
    )
    return float(toy_reward(batch).mean())


@pytest.mark.parametrize("algo", ALGOS)
def test_trainer_raises_a_toy_reward_within_a_few_steps(algo):
    trainer = make_trainer(algo, kl_coef=0.0, learning_rate=1e-2)
    before = _mean_reward(trainer, seed=123)  # 0.11: about one a–z token in ten
    scores = [trainer.step(PROMPTS)["objective/scores"] for _ in range(15)]
    after = _mean_reward(trainer, seed=123)  # measured 0.86–0.99 after 15 steps
    assert after > before + 0.4, (algo, before, after, scores)


@pytest.mark.parametrize("algo", ALGOS)
def test_resume_continues_counters_optimiser_and_rng(algo, tmp_path):
    kw = dict(kl_control="adaptive", kl_target=0.5)
    straight = make_trainer(algo, **kw)
    for _ in range(3):
        straight.step(PROMPTS)
    first = make_trainer(algo, **kw)
    for _ in range(2):
        first.step(PROMPTS)
    first.save_checkpoint(tmp_path / "run")
    del first  # "killed": nothing but the run directory survives
    resumed = make_trainer(algo, **kw)
    resumed.load_checkpoint(tmp_path / "run")
    assert resumed.global_step == 2 and resumed.n_samples == 2 * 16
    assert resumed.policy_optimizer.state_dict()["state"][0]["step"] == 2 * 2 * 2  # steps × epochs × minibatches
    resumed.step(PROMPTS)
    assert resumed.kl_controller.value == straight.kl_controller.value
    for p_s, p_r in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(p_s, p_r)


def test_train_writes_a_checkpoint_transformers_loads(tmp_path):
    trainer = make_trainer("rloo")
    history = trainer.train(PROMPTS, total_steps=2, log_path=tmp_path / "log.jsonl", checkpoint_dir=tmp_path / "run")
    assert len(history) == 2 and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "run" / "critic").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "policy")
    for (name, p), q in zip(trainer.policy.named_parameters(), loaded.parameters(), strict=True):
        assert torch.equal(p, q), name
    saved = json.loads((tmp_path / "run" / "rl_config.json").read_text())  # its own name, not PPO's
    assert saved["algo"] == "rloo"
    assert not (tmp_path / "run" / "ppo_config.json").exists()
    assert not (tmp_path / "run" / "current" / "ppo_config.json").exists()


def _independent_logprobs(model, input_ids, attention_mask, n_query, temperature):
    """log π of the response tokens from the full logits and a plain log-softmax."""
    position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)[:, n_query - 1 : -1]  # (B, R, V)
    return logp.gather(-1, input_ids[:, n_query:, None]).squeeze(-1)


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean", "constant"])
def test_per_token_loss_matches_an_independent_computation(aggregation):
    trainer = make_trainer("grpo", loss_aggregation=aggregation, temperature=0.7)
    batch = trainer.rollout(PROMPTS)
    mask = batch.response_mask.float()
    ids, attn, p = batch.input_ids, batch.attention_mask, batch.n_query
    g = torch.Generator().manual_seed(0)
    old = batch.logprobs + 0.3 * torch.randn(batch.logprobs.shape, generator=g)  # ratios away from 1
    adv = torch.randn(mask.shape[0], 1, generator=g) * mask
    new = response_logprobs(trainer.policy, ids, attn, p, 0.7)[0]
    loss = trainer.policy_loss(new, old, adv, 0.2, mask)

    ref_new = _independent_logprobs(trainer.policy, ids, attn, p, 0.7)
    torch.testing.assert_close(new * mask, ref_new * mask, atol=1e-5, rtol=0)
    coef_1 = torch.exp(ref_new - old)  # TRL's GRPOTrainer formula
    coef_2 = torch.clamp(coef_1, 0.8, 1.2)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if aggregation == "token-mean":
        expected = (per_token * mask).sum() / mask.sum()
    elif aggregation == "sequence-mean":
        expected = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    else:
        expected = (per_token * mask).sum() / (mask.shape[0] * 10)  # max_new_tokens
    assert abs(loss.item() - expected.item()) < 1e-5


def test_config_rejects_bad_choices():
    with pytest.raises(ValueError, match="algo must be one of"):
        CriticFreeConfig(algo="ppo")
    with pytest.raises(ValueError, match="loss_aggregation must be one of"):
        CriticFreeConfig(loss_aggregation="sum")
    with pytest.raises(ValueError, match="num_generations must be ≥ 2"):
        CriticFreeConfig(algo="rloo", num_generations=1)
    with pytest.raises(ValueError, match="batch_size × num_generations"):
        CriticFreeConfig(batch_size=3, num_generations=3, minibatch_size=4)
    # a minibatch larger than the step names the option to change, not the derived num_minibatches = 0
    with pytest.raises(ValueError, match=r"minibatch_size .* = 8 must divide batch_size × num_generations = 4: pass "
                                         r"--minibatch-size 4"):  # fmt: skip
        CriticFreeConfig(batch_size=2, num_generations=2, minibatch_size=8)
    CriticFreeConfig(algo="reinforce++", num_generations=1, batch_size=8, minibatch_size=8)
    assert "k3" in CriticFreeConfig(kl_penalty="loss", kl_estimator="k3").kl_description


def test_prefix_sharing_samples_what_repeated_prompts_sample():
    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=0)
    kw = dict(max_new_tokens=8, temperature=1.0)
    shared = sample_responses(policy, tok, PROMPTS, num_generations=3, generator=torch.Generator().manual_seed(5), **kw)
    repeated = [p for p in PROMPTS for _ in range(3)]
    plain = sample_responses(policy, tok, repeated, generator=torch.Generator().manual_seed(5), **kw)
    assert shared.prompts == plain.prompts == repeated
    assert torch.equal(shared.query_ids, plain.query_ids)
    assert torch.equal(shared.response_ids, plain.response_ids)
    torch.testing.assert_close(shared.logprobs, plain.logprobs, atol=1e-5, rtol=0)
    # and the recorded log-probs are the policy's on the full sequences
    scored = response_logprobs(policy, shared.input_ids, shared.attention_mask, shared.n_query, 1.0)[0]
    torch.testing.assert_close(shared.logprobs, scored * shared.response_mask, atol=1e-5, rtol=0)


def test_resuming_a_run_written_with_ppo_config_json_drops_the_stale_link(tmp_path):
    import os

    trainer = make_trainer("grpo")
    trainer.train(PROMPTS, total_steps=1, checkpoint_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    current = run / "current"
    (current / "rl_config.json").rename(current / "ppo_config.json")  # as lm rl wrote it before
    os.symlink(os.path.join("current", "ppo_config.json"), run / "ppo_config.json")
    (run / "rl_config.json").unlink()
    resumed = make_trainer("grpo")
    resumed.load_checkpoint(run)  # the old run resumes: the state is in trainer_state.pt
    assert resumed.global_step == 1
    resumed.train(PROMPTS, total_steps=2, checkpoint_dir=run, progress=False)
    assert json.loads((run / "rl_config.json").read_text())["algo"] == "grpo"
    assert not (run / "ppo_config.json").is_symlink()  # no link left pointing at a file the new checkpoint lacks


def _rollout_rows(k=4, seed=0):
    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=seed)
    policy.eval()
    g = torch.Generator().manual_seed(0)
    batch = sample_responses(policy, tok, ["hello there", "x", "a good film because it"], max_new_tokens=10,
                             temperature=1.0, generator=g, num_generations=k)  # fmt: skip
    return policy, batch


@pytest.mark.parametrize("with_entropy", [False, True])
def test_grouped_logprobs_compute_each_prompt_once_with_the_same_values_and_gradients(with_entropy, monkeypatch):
    from prefrl.lm.logprobs import grouped_response_logprobs, shared_prompt_groups

    policy, batch = _rollout_rows()
    ids, attn, p, mask = batch.input_ids, batch.attention_mask, batch.n_query, batch.response_mask.float()
    assert shared_prompt_groups(ids, attn, p, 4) and not shared_prompt_groups(ids, attn, p, 3)
    assert not shared_prompt_groups(ids[[0, 1, 2, 4]], attn[[0, 1, 2, 4]], p, 4)  # a row of another prompt
    seen = []  # token positions each model call computes
    forward = type(policy).forward

    def counting(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(kw["input_ids"].numel())
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(policy), "forward", counting)
    lp, ent = response_logprobs(policy, ids, attn, p, 0.7, with_entropy=with_entropy)
    (lp * mask).sum().backward()
    grads = [q.grad.clone() for q in policy.parameters()]
    policy.zero_grad()
    glp, gent = grouped_response_logprobs(policy, ids, attn, p, 4, 0.7, with_entropy=with_entropy)
    (glp * mask).sum().backward()
    b, t = ids.shape
    assert seen == [b * t, (b // 4) * p, b * (t - p)]  # the 3 prompts once (not 12 times), then the responses
    torch.testing.assert_close(glp * mask, lp * mask, atol=1e-5, rtol=0)
    if with_entropy:
        torch.testing.assert_close(gent * mask, ent * mask, atol=1e-5, rtol=0)
    for q, g in zip(policy.parameters(), grads, strict=True):
        torch.testing.assert_close(q.grad, g, atol=1e-5, rtol=1e-4)
    # rows that do not come in groups of one prompt take the plain path
    seen.clear()
    other = grouped_response_logprobs(policy, ids[[0, 4, 8]], attn[[0, 4, 8]], p, 3)[0]
    assert seen == [3 * t]
    torch.testing.assert_close(other, response_logprobs(policy, ids[[0, 4, 8]], attn[[0, 4, 8]], p)[0])


@pytest.mark.parametrize("minibatch_size", [16, 4])  # whole groups (shared prompt) / groups split (plain path)
def test_update_with_shared_prompts_matches_the_plain_update(minibatch_size):
    after = []
    for group_size in (4, 1):  # 1: every row computes its prompt
        trainer = make_trainer("grpo", batch_size=4, minibatch_size=minibatch_size, kl_penalty="loss",
                               kl_estimator="k3", kl_coef=0.1)  # fmt: skip
        trainer.group_size = group_size
        metrics = trainer.step(PROMPTS)
        after.append((torch.cat([q.detach().flatten() for q in trainer.policy.parameters()]), metrics))
    (p_shared, m_shared), (p_plain, m_plain) = after
    torch.testing.assert_close(p_shared, p_plain, atol=1e-5, rtol=0)
    for key in ("loss/policy", "policy/approx_kl", "objective/kl"):
        assert m_shared[key] == pytest.approx(m_plain[key], abs=1e-5)


def test_minibatch_permutation_keeps_groups_whole_when_the_sizes_allow():
    from prefrl.rl.ppo import minibatch_permutation

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        perm = minibatch_permutation(12, 4, 2, g)
        assert sorted(perm.tolist()) == list(range(12))
        for mb in perm.view(3, 4):  # each minibatch: two whole groups {2i, 2i + 1}
            groups = (mb // 2).tolist()
            assert all(groups.count(x) == 2 for x in groups)
    # a minibatch size that is not a multiple of the group: a permutation of rows (groups may split)
    splits = 0
    for _ in range(20):
        perm = minibatch_permutation(12, 4, 3, g)
        assert sorted(perm.tolist()) == list(range(12))
        splits += any(len(set((mb // 3).tolist())) > 1 for mb in perm.view(3, 4))
    assert splits > 0


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_update_minibatches_never_split_a_prompt_group(algo, monkeypatch):
    import prefrl.lm.critic_free as cf
    from prefrl.lm.logprobs import shared_prompt_groups

    trainer = make_trainer(algo, batch_size=4, num_generations=4, minibatch_size=8, update_epochs=2)
    whole = []
    real = cf.grouped_response_logprobs

    def recording(model, ids, attn, p, k, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        whole.append(shared_prompt_groups(ids, attn, p, k))
        return real(model, ids, attn, p, k, *a, **kw)

    monkeypatch.setattr(cf, "grouped_response_logprobs", recording)
    trainer.step(PROMPTS)
    assert whole == [True] * 4  # 2 epochs × 2 minibatches of 2 whole groups each: every prompt computed once
