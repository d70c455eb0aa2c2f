"""PPOConfig validation, RolloutBuffer advantages and the ppo_update step on a toy bandit policy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from prefrl.rl.ppo import PPOConfig, RolloutBuffer, explained_variance, ppo_update


class BanditPolicy(nn.Module):
    """Categorical over 3 actions from a linear map of the obs, and a linear value."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pi = nn.Linear(2, 3)
        self.v = nn.Linear(2, 1)

    def get_action_and_value(self, obs, action=None):  # noqa: ANN001, ANN201 - test double
        dist = torch.distributions.Categorical(logits=self.pi(obs))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.v(obs).squeeze(-1)


def _batch(policy: BanditPolicy, n: int = 256, seed: int = 0) -> RolloutBuffer:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 2, generator=g)
    actions = torch.randint(0, 3, (n,), generator=g)
    with torch.no_grad():
        _, logprobs, _, values = policy.get_action_and_value(obs, actions)
    # action 0 is good, the others bad
    advantages = torch.where(actions == 0, 1.0, -0.5)
    return RolloutBuffer(obs, actions, logprobs, values, advantages, advantages + values)


@pytest.mark.parametrize(
    "field, value",
    [
        ("learning_rate", 0.0),
        ("num_steps", 0),
        ("num_steps", 2.5),
        ("gamma", 1.5),
        ("gae_lambda", -0.1),
        ("num_minibatches", 0),
        ("update_epochs", 0),
        ("clip_coef", -0.2),
        ("ent_coef", -1.0),
        ("vf_coef", -1.0),
        ("max_grad_norm", 0.0),
        ("target_kl", 0.0),
        ("total_steps", 0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PPOConfig(**{field: value})


def test_config_defaults_are_cleanrl_mujoco() -> None:
    cfg = PPOConfig()
    assert (cfg.learning_rate, cfg.num_steps, cfg.gamma, cfg.gae_lambda) == (3e-4, 2048, 0.99, 0.95)
    assert (cfg.num_minibatches, cfg.update_epochs, cfg.clip_coef, cfg.ent_coef) == (32, 10, 0.2, 0.0)
    assert (cfg.vf_coef, cfg.max_grad_norm, cfg.target_kl) == (0.5, 0.5, None)
    assert cfg.minibatch_size(1) == 64
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_steps=4, num_minibatches=8).minibatch_size(1)


def test_from_rollout_matches_hand_computed_gae() -> None:
    # T = 3, N = 1, γ = 0.5, λ = 1; the episode ends at t = 1.
    rewards = torch.tensor([[1.0], [2.0], [4.0]])
    values = torch.tensor([[0.5], [1.0], [2.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    last_values = torch.tensor([8.0])
    buf = RolloutBuffer.from_rollout(
        obs=torch.zeros(3, 1, 2),
        actions=torch.zeros(3, 1, dtype=torch.long),
        logprobs=torch.zeros(3, 1),
        values=values,
        rewards=rewards,
        dones=dones,
        last_values=last_values,
        gamma=0.5,
        gae_lambda=1.0,
    )
    # t=2: R = 4 + 0.5·8 = 8 ; t=1: R = 2 (episode ends) ; t=0: R = 1 + 0.5·2 = 2
    torch.testing.assert_close(buf.returns, torch.tensor([2.0, 2.0, 8.0]))
    torch.testing.assert_close(buf.advantages, torch.tensor([1.5, 1.0, 6.0]))
    assert buf.obs.shape == (3, 2) and len(buf) == 3


def test_rollout_buffer_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="logprobs"):
        RolloutBuffer(torch.zeros(4, 2), torch.zeros(4), torch.zeros(3), torch.zeros(4), torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        RolloutBuffer.from_rollout(
            torch.zeros(3, 2), torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3),
            torch.zeros(3), torch.zeros(()), 0.9, 0.9,
        )  # fmt: skip


def test_ppo_update_moves_probability_towards_positive_advantage() -> None:
    policy = BanditPolicy()
    batch = _batch(policy)
    with torch.no_grad():
        p0_before = torch.softmax(policy.pi(batch.obs), -1)[:, 0].mean()
        h_before = torch.distributions.Categorical(logits=policy.pi(batch.obs)).entropy().mean().item()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    cfg = PPOConfig(num_minibatches=4, update_epochs=4)
    metrics = ppo_update(policy, optimizer, batch, cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p0_after = torch.softmax(policy.pi(batch.obs), -1)[:, 0].mean()
    assert p0_after > p0_before + 0.02
    expected = {
        "loss/policy",
        "loss/value",
        "loss/entropy",
        "policy/approx_kl",
        "policy/clipfrac",
        "val/explained_variance",
        "policy/epochs",
    }
    assert expected <= set(metrics)
    assert metrics["policy/approx_kl"] > 0 and 0.0 <= metrics["policy/clipfrac"] <= 1.0
    # The policy's entropy on the batch during the last epoch: between that after the update and
    # that before it (the update sharpens π towards action 0; here 0.968 → 0.954).
    with torch.no_grad():
        h_after = torch.distributions.Categorical(logits=policy.pi(batch.obs)).entropy().mean().item()
    assert h_after < h_before
    assert h_after - 1e-3 <= metrics["loss/entropy"] <= h_before
    assert metrics["policy/epochs"] == 4


def test_ppo_update_reports_the_entropy_of_the_policy_it_evaluated() -> None:
    # One epoch of one minibatch: the reported entropy is that of π_old on the whole batch,
    # computed here independently of ppo_update.
    policy = BanditPolicy()
    batch = _batch(policy)
    with torch.no_grad():
        h_old = torch.distributions.Categorical(logits=policy.pi(batch.obs)).entropy().mean().item()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    cfg = PPOConfig(num_minibatches=1, update_epochs=1)
    metrics = ppo_update(policy, optimizer, batch, cfg, generator=torch.Generator().manual_seed(0))
    assert 0.5 < h_old < math.log(3)  # the test policy is neither uniform nor deterministic
    assert metrics["loss/entropy"] == pytest.approx(h_old, rel=1e-5)


def test_ppo_update_is_reproducible_with_a_generator_and_stops_on_target_kl() -> None:
    results = []
    for _ in range(2):
        policy = BanditPolicy()
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
        ppo_update(policy, optimizer, _batch(policy), PPOConfig(num_minibatches=4, update_epochs=3),
                   generator=torch.Generator().manual_seed(1))  # fmt: skip
        results.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    torch.testing.assert_close(results[0], results[1])

    policy = BanditPolicy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=5e-2)
    cfg = PPOConfig(num_minibatches=4, update_epochs=10, target_kl=1e-6)
    metrics = ppo_update(policy, optimizer, _batch(policy), cfg, generator=torch.Generator().manual_seed(0))
    assert metrics["policy/epochs"] == 1


def test_gradient_norm_is_clipped() -> None:
    policy = BanditPolicy()
    before = copy.deepcopy(policy.state_dict())
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    batch = _batch(policy)
    batch.returns = batch.returns + 1000.0  # a huge value loss → a huge raw gradient
    cfg = PPOConfig(num_minibatches=1, update_epochs=1, max_grad_norm=0.1, clip_vloss=False)
    ppo_update(policy, optimizer, batch, cfg, generator=torch.Generator().manual_seed(0))
    step = torch.cat([(p.detach() - before[n]).flatten() for n, p in policy.named_parameters()])
    # SGD with lr 1: the parameter step is the clipped gradient, of norm max_grad_norm
    assert step.norm().item() == pytest.approx(0.1, rel=1e-3)


def test_explained_variance() -> None:
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, 2.5), y) == pytest.approx(0.0)
    assert explained_variance(y, torch.ones(4)) != explained_variance(y, torch.ones(4))  # NaN
