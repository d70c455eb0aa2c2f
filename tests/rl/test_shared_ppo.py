"""The control path (ppo_update over a RolloutBuffer) and the LM path (ppo_epochs over masked
per-token batches) are one update: same batch, same parameters afterwards (#11)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prefrl.rl.ppo import MinibatchOutput, PPOConfig, RolloutBuffer, ppo_epochs, ppo_update


class TokenPolicy(nn.Module):
    """Categorical over 5 "tokens" from a linear map of the state, and a linear value head."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.pi = nn.Linear(3, 5)
        self.v = nn.Linear(3, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def get_action_and_value(self, obs, action=None):  # noqa: ANN001, ANN201 - test double
        dist = torch.distributions.Categorical(logits=self.pi(obs))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.v(obs).squeeze(-1)


def _rollout(policy: TokenPolicy, n: int = 48, seed: int = 1) -> RolloutBuffer:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    actions = torch.randint(0, 5, (n,), generator=g)
    with torch.no_grad():
        _, logprobs, _, values = policy.get_action_and_value(obs, actions)
    advantages = torch.where(actions == 2, 1.0, -0.3) + 0.1 * torch.randn(n, generator=g)
    return RolloutBuffer(obs, actions, logprobs, values, advantages, advantages + values)


CFG = PPOConfig(
    update_epochs=3, num_minibatches=4, clip_coef=0.2, clip_vloss=True, vf_coef=0.5, ent_coef=0.01,
    max_grad_norm=0.5, norm_adv=True, learning_rate=0.05,
)


def _lm_style_update(policy: TokenPolicy, batch: RolloutBuffer, seed: int) -> dict[str, float]:
    """The same rows as LM responses of one token each: (B, 1) tensors with an all-ones mask."""
    opt = torch.optim.Adam(policy.parameters(), lr=CFG.learning_rate, eps=CFG.adam_eps)

    def evaluate(idx: torch.Tensor) -> MinibatchOutput:
        _, lp, ent, v = policy.get_action_and_value(batch.obs[idx], batch.actions[idx])
        return MinibatchOutput(logprobs=lp[:, None], values=v[:, None], entropy=ent[:, None])  # (mb, 1)

    col = lambda t: t[:, None]  # noqa: E731 - (B,) → (B, 1)
    return ppo_epochs(
        evaluate, [opt], col(batch.logprobs), col(batch.advantages),
        old_values=col(batch.values), returns=col(batch.returns), mask=torch.ones(len(batch), 1),
        update_epochs=CFG.update_epochs, num_minibatches=CFG.num_minibatches, clip_coef=CFG.clip_coef,
        clip_vloss=CFG.clip_coef, vf_coef=CFG.vf_coef, ent_coef=CFG.ent_coef, max_grad_norm=CFG.max_grad_norm,
        norm_adv=CFG.norm_adv, generator=torch.Generator().manual_seed(seed),
    )


def test_control_update_equals_lm_update_with_one_token_per_row():
    control, lm = TokenPolicy(), TokenPolicy()
    batch = _rollout(control)
    opt = torch.optim.Adam(control.parameters(), lr=CFG.learning_rate, eps=CFG.adam_eps)
    m_control = ppo_update(control, opt, batch, CFG, generator=torch.Generator().manual_seed(7))
    m_lm = _lm_style_update(lm, batch, seed=7)
    moved = sum(float((p.detach() - q.detach()).abs().sum()) for p, q in zip(control.parameters(), TokenPolicy().parameters()))
    assert moved > 1e-3  # the update did something
    for p_c, p_l in zip(control.parameters(), lm.parameters(), strict=True):
        torch.testing.assert_close(p_c, p_l, rtol=1e-5, atol=1e-6)
    for key in ("loss/policy", "loss/value", "loss/entropy", "policy/approx_kl", "policy/clipfrac", "policy/epochs"):
        assert m_control[key] == pytest.approx(m_lm[key], rel=1e-5, abs=1e-7), key


class SequencePolicy(nn.Module):
    """Per-token log-probs and values of (B, T) "responses" from a tiny shared network."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.pi = nn.Linear(2, 4)
        self.v = nn.Linear(2, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(self.pi(x), -1)  # (B, T, 4)
        return logp.gather(-1, tokens[..., None]).squeeze(-1), self.v(x).squeeze(-1)  # (B, T) each


def _masked_update(padding: float, seed: int = 0) -> tuple[list[torch.Tensor], dict[str, float]]:
    """One masked update where the padded entries hold ``padding``-dependent garbage."""
    g = torch.Generator().manual_seed(11)
    b, t = 8, 5
    x = torch.randn(b, t, 2, generator=g)
    tokens = torch.randint(0, 4, (b, t), generator=g)
    lengths = torch.tensor([5, 1, 3, 2, 5, 4, 1, 3])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # (B, T)
    policy = SequencePolicy()
    with torch.no_grad():
        old_lp, old_v = policy(x, tokens)
    adv = torch.randn(b, t, generator=g)
    ret = old_v + torch.randn(b, t, generator=g)
    pad = (1 - mask) * padding
    # garbage on padded tokens: old log-probs, advantages, values, returns and new outputs alike
    old_lp, adv, old_v, ret = old_lp + pad, adv + 3 * pad, old_v - pad, ret + 2 * pad
    x = torch.where(mask.bool()[..., None], x, x + padding)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)

    def evaluate(idx: torch.Tensor) -> MinibatchOutput:
        lp, v = policy(x[idx], tokens[idx])
        return MinibatchOutput(logprobs=lp, values=v + pad[idx])

    metrics = ppo_epochs(
        evaluate, [opt], old_lp, adv, old_values=old_v, returns=ret, mask=mask,
        update_epochs=2, num_minibatches=2, clip_coef=0.2, clip_vloss=0.2, vf_coef=0.5,
        max_grad_norm=1.0, norm_adv=True, generator=torch.Generator().manual_seed(seed),
    )
    return [p.detach().clone() for p in policy.parameters()], metrics


def test_padded_entries_do_not_change_the_masked_update():
    clean, m_clean = _masked_update(0.0)
    noisy, m_noisy = _masked_update(7.5)
    assert any(not torch.equal(p, q) for p, q in zip(clean, SequencePolicy().parameters()))
    for p, q in zip(clean, noisy, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for key in ("loss/policy", "loss/value", "policy/approx_kl", "policy/clipfrac"):
        assert m_clean[key] == pytest.approx(m_noisy[key], rel=1e-5, abs=1e-7), key


def test_lm_trainer_update_goes_through_ppo_epochs(monkeypatch):
    """LMPPOTrainer's update is the shared routine (no epoch loop of its own)."""
    import prefrl.lm.ppo as lm_ppo

    calls = []
    real = lm_ppo.ppo_epochs

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_ppo, "ppo_epochs", spy)
    from prefrl.lm.models import tiny_causal_lm
    from prefrl.lm.reward_functions import TokenFrequencyReward
    from prefrl.lm.reward_model import RewardModel

    torch.set_num_threads(1)
    policy, tok = tiny_causal_lm(seed=0)
    critic = RewardModel.from_causal_lm(tiny_causal_lm(seed=1)[0])
    cfg = lm_ppo.LMPPOConfig(batch_size=4, minibatch_size=2, update_epochs=2, max_new_tokens=4)
    trainer = lm_ppo.LMPPOTrainer(
        policy, copy.deepcopy(policy), critic, TokenFrequencyReward(5), tok, cfg
    )
    m = trainer.step(["a", "b", "c", "d"])
    assert len(calls) == 1 and calls[0]["num_minibatches"] == 2 and calls[0]["update_epochs"] == 2
    assert calls[0]["mask"].dim() == 2 and calls[0]["mask"].shape[0] == 4  # (B, R) response tokens
    assert m["policy/epochs"] == 2.0
