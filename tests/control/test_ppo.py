"""ActorCritic, PPOAgent (collect / update / state_dict / evaluate) and PPO learning CartPole."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from prefrl.control.envs import make_vec_env
from prefrl.control.policies import ActorCritic
from prefrl.control.ppo_agent import PPOAgent
from prefrl.rl.ppo import PPOConfig, RolloutBuffer, ppo_update

# ----------------------------------------------------------------------------- toy env


class CounterEnv(gym.Env):
    """obs = [t / 10], reward = 1 + t, Discrete(2) actions; terminates at t = ``end`` when ``terminate``."""

    def __init__(self, terminate: bool = False, end: int = 3) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate, self.end, self.t = terminate, end, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # noqa: ANN201
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):  # noqa: ANN001, ANN201
        reward = 1.0 + self.t
        self.t += 1
        return np.array([self.t / 10], np.float32), reward, self.terminate and self.t >= self.end, False, {}


for _name, _kwargs, _limit in (("Truncating", {"terminate": False}, 3), ("Terminating", {"terminate": True}, 10)):
    if f"prefrl-test/Counter{_name}-v0" not in gym.registry:
        gym.register(f"prefrl-test/Counter{_name}-v0", entry_point=CounterEnv, kwargs=_kwargs, max_episode_steps=_limit)


def _params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# ----------------------------------------------------------------------------- policies


def test_actor_critic_gaussian_matches_torch_distributions() -> None:
    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    policy = ActorCritic(obs_space, act_space)
    with torch.no_grad():
        policy.actor_logstd.fill_(-0.3)
    obs = torch.randn(7, 5)
    action, logprob, entropy, value = policy.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))
    assert action.shape == (7, 3) and logprob.shape == entropy.shape == value.shape == (7,)
    mean, _ = policy(obs)
    dist = torch.distributions.Normal(mean, policy.actor_logstd.exp().expand(7, 3))
    torch.testing.assert_close(logprob, dist.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    torch.testing.assert_close(value, policy.get_value(obs))
    mean_action, *_ = policy.get_action_and_value(obs, deterministic=True)
    torch.testing.assert_close(mean_action, mean)


def test_actor_critic_categorical_and_image() -> None:
    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3))
    obs = torch.randn(6, 4)
    action, logprob, entropy, _ = policy.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))
    dist = torch.distributions.Categorical(logits=policy(obs)[0])
    torch.testing.assert_close(logprob, dist.log_prob(action))
    torch.testing.assert_close(entropy, dist.entropy())

    cnn = ActorCritic(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    action, logprob, _, value = cnn.get_action_and_value(frames)
    assert cnn.image and action.shape == (2,) and value.shape == (2,)
    # the torso scales by 1/255: a frame of 255s equals a float frame of 1s through the raw torso
    ones = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    torch.testing.assert_close(cnn.get_value(ones), cnn.critic_head(cnn.torso(torch.ones(1, 4, 84, 84))).squeeze(-1))


def test_sample_draws_from_the_same_distribution_as_get_action_and_value() -> None:
    # Box: μ + σ·ε with σ folded into the noise; the actor-only pass equals the full forward's mean.
    policy = ActorCritic(gym.spaces.Box(-np.inf, np.inf, (5,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32))
    with torch.no_grad():
        policy.actor_logstd.copy_(torch.tensor([[-1.0, 0.0, 0.5]]))
        obs = torch.randn(4, 5)
        mean, _ = policy(obs)
        torch.testing.assert_close(policy.actor_output(obs), mean)
        noise = policy.draw_noise((20_000, 4), generator=torch.Generator().manual_seed(0))
        actions = torch.stack([policy.sample(obs, n) for n in noise[:50]])
        torch.testing.assert_close(actions, mean + noise[:50])
        sd = noise.reshape(-1, 3).std(0)
        torch.testing.assert_close(sd, policy.actor_logstd.exp()[0], atol=0.02, rtol=0.02)
        # the cached actor views follow in-place parameter updates (the optimiser's, load_state_dict's)
        policy.mlp.weights[-1].add_(0.5)
        torch.testing.assert_close(policy.actor_output(obs), policy(obs)[0])

    # Discrete: Gumbel-max samples follow softmax(logits).
    cat = ActorCritic(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(3))
    with torch.no_grad():
        cat.mlp.weights[-1].mul_(200.0)  # spread the probabilities away from uniform
        obs = torch.randn(1, 4)
        probs = torch.softmax(cat(obs)[0], -1)[0]
        noise = cat.draw_noise((30_000, 1), generator=torch.Generator().manual_seed(1))
        counts = torch.bincount(cat.sample(obs.expand(30_000, 4), noise[:, 0]), minlength=3).float()
    torch.testing.assert_close(counts / 30_000, probs, atol=0.012, rtol=0)


def test_collect_scores_its_actions_with_the_behaviour_policy() -> None:
    """The batched log π_old / V_old equal a per-step evaluation of the stored inputs and actions."""
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        agent = PPOAgent(make_vec_env(env_id, n_envs=2, seed=0), PPOConfig(num_steps=32, num_minibatches=2), seed=0)
        r = agent.collect()
        with torch.no_grad():
            for t in (0, 17, 31):
                _, lp, _, v = agent.policy.get_action_and_value(r.policy_obs[t], r.policy_actions[t])
                torch.testing.assert_close(r.logprobs[t], lp)
                torch.testing.assert_close(r.values[t], v)
        if env_id == "Pendulum-v1":  # env actions are the sampled ones clipped to the bounds
            np.testing.assert_allclose(r.actions, np.clip(r.policy_actions.numpy(), -2.0, 2.0))
        else:
            np.testing.assert_array_equal(r.actions, r.policy_actions.numpy())


def test_twin_mlp_towers_are_independent_networks() -> None:
    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))
    obs = torch.randn(8, 4)
    policy.get_value(obs).sum().backward()  # the critic's loss only
    for w in policy.mlp.weights:
        assert w.grad[0].abs().sum() == 0 and w.grad[1].abs().sum() > 0
    # cleanrl's init: the policy head is 100× smaller than the value head
    head = policy.mlp.weights[-1].detach()
    assert head[0].norm() / head[1, :, :1].norm() < 0.05


@pytest.mark.parametrize(
    "obs_space, act_space, what",
    [
        (gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))}), gym.spaces.Discrete(2), "observation"),
        (gym.spaces.Discrete(4), gym.spaces.Discrete(2), "observation"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([2, 2]), "action"),
        (gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (2, 2)), "action"),
    ],
)
def test_actor_critic_rejects_unsupported_spaces(obs_space: gym.Space, act_space: gym.Space, what: str) -> None:
    with pytest.raises(ValueError, match=f"unsupported {what} space"):
        ActorCritic(obs_space, act_space)


def test_ppo_update_agrees_with_a_cleanrl_style_reference() -> None:
    """Our update (hand-written log-probs, fused grad clipping) vs cleanrl's loop with torch.distributions."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    torch.manual_seed(0)
    ours = ActorCritic(obs_space, act_space)
    ref = copy.deepcopy(ours)
    g = torch.Generator().manual_seed(0)
    b_obs = torch.randn(128, 4, generator=g)
    with torch.no_grad():
        b_actions, b_logprobs, _, b_values = ours.get_action_and_value(b_obs, generator=g)
    b_advantages = torch.randn(128, generator=g)
    b_returns = b_advantages + b_values
    cfg = PPOConfig(num_minibatches=4, update_epochs=3, ent_coef=0.01)
    opt = torch.optim.Adam(ours.parameters(), lr=1e-3, eps=1e-5)
    batch = RolloutBuffer(b_obs, b_actions, b_logprobs, b_values, b_advantages, b_returns)
    ppo_update(ours, opt, batch, cfg, generator=torch.Generator().manual_seed(7))

    # cleanrl ppo_continuous_action.py, verbatim maths
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-5)
    perm_g = torch.Generator().manual_seed(7)
    mb = 32
    for _ in range(3):
        b_inds = torch.randperm(128, generator=perm_g)
        for start in range(0, 128, mb):
            i = b_inds[start : start + mb]
            mean, newvalue = ref(b_obs[i])
            dist = torch.distributions.Normal(mean, ref.actor_logstd.expand_as(mean).exp())
            newlogprob = dist.log_prob(b_actions[i]).sum(1)
            entropy = dist.entropy().sum(1)
            ratio = (newlogprob - b_logprobs[i]).exp()
            adv = (b_advantages[i] - b_advantages[i].mean()) / (b_advantages[i].std() + 1e-8)
            pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)).mean()
            v_unclipped = (newvalue - b_returns[i]) ** 2
            v_clipped = b_values[i] + torch.clamp(newvalue - b_values[i], -0.2, 0.2)
            v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[i]) ** 2).mean()
            loss = pg_loss - 0.01 * entropy.mean() + v_loss * 0.5
            ref_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            ref_opt.step()
    torch.testing.assert_close(_params(ours), _params(ref), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- agent


def test_collect_shapes_and_episode_bookkeeping() -> None:
    envs = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    agent = PPOAgent(envs, PPOConfig(num_steps=64, num_minibatches=4, update_epochs=1), seed=0)
    r = agent.collect()
    assert r.obs.shape == (64, 3, 4) and r.obs.dtype == np.float32
    assert r.actions.shape == (64, 3) and set(np.unique(r.actions)) <= {0, 1}
    assert r.true_rewards.shape == r.dones.shape == r.episode_ids.shape == r.steps.shape == (64, 3)
    assert np.all(r.true_rewards == 1.0)
    assert r.sim_states is not None and r.sim_states.shape == (64, 3, 4)
    np.testing.assert_allclose(r.sim_states, r.obs, rtol=1e-6)  # CartPole's state is its obs
    assert r.dones.any(), "random CartPole episodes end within 64 steps"
    assert r.global_step == agent.global_step == 192
    for n in range(3):
        for t in range(1, 64):
            if r.dones[t - 1, n]:
                assert r.episode_ids[t, n] != r.episode_ids[t - 1, n] and r.steps[t, n] == 0
            else:
                assert r.episode_ids[t, n] == r.episode_ids[t - 1, n] and r.steps[t, n] == r.steps[t - 1, n] + 1
    # ids are unique across envs; completed-episode returns equal their lengths in CartPole
    firsts = {(int(r.episode_ids[t, n]), n) for t in range(64) for n in range(3)}
    assert len({i for i, _ in firsts}) == len(firsts)
    np.testing.assert_allclose(r.episode_returns, r.episode_lengths)
    assert len(r.episode_returns) == int(r.dones.sum())
    # the rollout continues where the previous one stopped
    r2 = agent.collect(8)
    assert r2.steps[0].tolist() == np.where(r.dones[-1], 0, r.steps[-1] + 1).tolist()


@pytest.mark.parametrize("kind", ["Truncating", "Terminating"])
def test_gae_bootstraps_truncation_from_final_obs_but_not_termination(kind: str) -> None:
    envs = make_vec_env(f"prefrl-test/Counter{kind}-v0", n_envs=2, seed=0)
    cfg = PPOConfig(num_steps=6, num_minibatches=2, update_epochs=1, gamma=0.9, gae_lambda=0.8, norm_obs=False)
    agent = PPOAgent(envs, cfg, seed=0)
    r = agent.collect()
    assert r.truncated[[2, 5]].all() == (kind == "Truncating") and r.terminated[[2, 5]].all() == (kind != "Truncating")
    np.testing.assert_allclose(r.obs[:3, 0, 0], [0.0, 0.1, 0.2], atol=1e-6)

    captured: dict[str, RolloutBuffer] = {}
    import prefrl.control.ppo_agent as opt_mod

    def fake_update(policy, optimizer, batch, cfg, generator=None):  # noqa: ANN001, ANN202
        captured["batch"] = batch
        return {}

    orig = opt_mod.ppo_update
    opt_mod.ppo_update = fake_update
    try:
        agent.update(r, r.true_rewards)
    finally:
        opt_mod.ppo_update = orig

    with torch.no_grad():
        v = agent.policy.get_value(torch.tensor([[0.0], [0.1], [0.2]])).numpy()  # V(s_0..2)
        v_final = agent.policy.get_value(torch.tensor([[0.3]])).item()  # V(o_final) after 3 steps
    rewards = [1.0, 2.0, 3.0]
    boot = v_final if kind == "Truncating" else 0.0
    # independent λ-return recursion over one 3-step episode
    adv, next_v, next_adv = np.zeros(3), boot, 0.0
    for t in reversed(range(3)):
        delta = rewards[t] + 0.9 * next_v - v[t]
        next_adv = delta + 0.9 * 0.8 * next_adv
        adv[t] = next_adv
        next_v = v[t]
    got = captured["batch"].advantages.reshape(6, 2)[:3, 0].numpy()
    np.testing.assert_allclose(got, adv, rtol=1e-5, atol=1e-5)


def test_update_validates_rewards_and_changes_parameters_continuous() -> None:
    envs = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    agent = PPOAgent(envs, PPOConfig(num_steps=64, num_minibatches=4, update_epochs=2, norm_reward=True), seed=0)
    r = agent.collect()
    assert r.actions.shape == (64, 2, 1) and np.all(np.abs(r.actions) <= 2.0)
    assert r.sim_states.shape == (64, 2, 2)
    with pytest.raises(ValueError, match="rewards must be"):
        agent.update(r, r.true_rewards[:10])
    with pytest.raises(ValueError, match="NaN"):
        agent.update(r, np.full_like(r.true_rewards, np.nan))
    before = _params(agent.policy)
    metrics = agent.update(r, r.true_rewards)
    assert not torch.equal(before, _params(agent.policy))
    assert all(np.isfinite(v) for k, v in metrics.items() if k != "val/explained_variance")
    assert metrics["charts/learning_rate"] == pytest.approx(3e-4) and agent.updates == 1
    agent.collect()
    assert agent.current_lr() == pytest.approx(3e-4 * (1 - 128 / 1_000_000))  # annealed linearly


def test_agent_rejects_next_step_autoreset() -> None:
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="SAME_STEP"):
        PPOAgent(envs, PPOConfig())


def test_state_dict_round_trip_continues_identically() -> None:
    cfg = PPOConfig(num_steps=32, num_minibatches=4, update_epochs=2, norm_reward=True, total_steps=1000)
    agent = PPOAgent(make_vec_env("Pendulum-v1", n_envs=2, seed=0), cfg, seed=0)
    r1 = agent.collect()
    agent.update(r1, r1.true_rewards)
    state = copy.deepcopy(agent.state_dict())
    r2 = agent.collect()
    m_a = agent.update(r2, r2.true_rewards)

    other = PPOAgent(make_vec_env("Pendulum-v1", n_envs=2, seed=5), cfg, seed=123)
    other.load_state_dict(state)
    assert other.global_step == 64 and other.updates == 1
    other.global_step = agent.global_step  # collect() would have advanced it
    m_b = other.update(r2, r2.true_rewards)
    torch.testing.assert_close(_params(agent.policy), _params(other.policy), rtol=0, atol=0)
    assert m_a == m_b
    # the normaliser and the RNG came along: the same raw obs give the same sampled actions
    third = PPOAgent(make_vec_env("Pendulum-v1", n_envs=2, seed=9), cfg, seed=77)
    third.load_state_dict(state)
    fourth = PPOAgent(make_vec_env("Pendulum-v1", n_envs=2, seed=9), cfg, seed=78)
    fourth.load_state_dict(state)
    obs = r2.obs[0]
    np.testing.assert_array_equal(third.act(obs, deterministic=False), fourth.act(obs, deterministic=False))
    np.testing.assert_array_equal(third.obs_rms.mean, state["obs_rms"]["mean"])
    assert not np.allclose(third.obs_rms.mean, 0.0)


def test_ppo_learns_cartpole_with_the_true_reward() -> None:
    """Deterministic evaluation reaches ≥ 400 within 100k env steps (usually 40–80k)."""
    cfg = PPOConfig(num_steps=64, num_minibatches=4, update_epochs=10, learning_rate=1e-3, total_steps=100_000)
    agent = PPOAgent(make_vec_env("CartPole-v1", n_envs=8, seed=0, record_sim_state=False), cfg, seed=0)
    first = np.mean(agent.evaluate("CartPole-v1", n_episodes=5, seed=100))
    best = first
    while agent.global_step < cfg.total_steps:
        r = agent.collect()
        agent.update(r, r.true_rewards)
        if agent.updates % 16 == 0 and agent.global_step >= 30_000:
            best = max(best, float(np.mean(agent.evaluate("CartPole-v1", n_episodes=5, seed=100))))
            if best >= 400:
                break
    assert first < 300  # the untrained deterministic policy
    assert best >= 400, f"deterministic return {best} after {agent.global_step} steps"


def test_agent_on_async_fixed_horizon_mujoco_and_on_atari_frames() -> None:
    envs = make_vec_env("Hopper-v5", n_envs=2, seed=0, async_=True, fixed_horizon=20, terminal_penalty=1.0)
    try:
        agent = PPOAgent(envs, PPOConfig(num_steps=50, num_minibatches=4, update_epochs=1), seed=0)
        r = agent.collect()
    finally:
        envs.close()
    assert not r.terminated.any() and r.truncated[[19, 39]].all() and r.truncated.sum() == 4
    # sim_state is the state of o_t (Hopper's obs is qpos[1:] ‖ qvel), also across the horizon resets
    np.testing.assert_allclose(r.sim_states[:, :, 1:6], r.obs[:, :, :5], atol=1e-6)
    assert r.steps.max() == 19 and (r.final_values[[19, 39]] != 0).all()

    pong = make_vec_env("ALE/Pong-v5", n_envs=2, seed=0)
    agent = PPOAgent(pong, PPOConfig(num_steps=16, num_minibatches=4, update_epochs=1), seed=0)
    r = agent.collect()
    assert r.obs.shape == (16, 2, 4, 84, 84) and r.obs.dtype == np.uint8 and r.sim_states is None
    before = _params(agent.policy)
    agent.update(r, r.true_rewards)
    assert not torch.equal(before, _params(agent.policy))
