"""SB3 adapter: the learned-reward VecEnv wrapper and SB3Optimizer on CartPole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from prefrl.control.envs import make_env  # noqa: E402
from prefrl.control.sb3 import LearnedRewardVecEnv, SB3Optimizer  # noqa: E402


def _params(opt: SB3Optimizer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in opt.algo.policy.parameters()])


def test_learned_reward_vec_env_replaces_reward_and_keeps_true_reward() -> None:
    venv = DummyVecEnv([lambda i=i: make_env("CartPole-v1", seed=i) for i in range(2)])
    seen = []

    def reward_fn(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        seen.append((obs.copy(), actions.copy()))
        return obs[:, 0] * 10.0 + actions  # depends on the obs the action was taken in

    env = LearnedRewardVecEnv(venv, reward_fn)
    obs0 = env.reset()
    env.recording = True
    obs1, rewards, dones, infos = env.step(np.array([1, 0]))
    np.testing.assert_allclose(seen[0][0], obs0)  # reward of (o_t, a_t), not of o_{t+1}
    np.testing.assert_allclose(rewards, obs0[:, 0] * 10.0 + np.array([1, 0]), rtol=1e-6)
    assert [info["true_reward"] for info in infos] == [1.0, 1.0]
    for _ in range(30):
        env.step(np.array([1, 1]))
    rollout = env.pop_rollout(global_step=62)
    assert rollout.obs.shape == (31, 2, 4) and rollout.actions.shape == (31, 2)
    assert np.all(rollout.true_rewards == 1.0) and rollout.dones.any()
    np.testing.assert_allclose(rollout.sim_states, rollout.obs, rtol=1e-6)
    np.testing.assert_allclose(rollout.episode_returns, rollout.episode_lengths)
    with pytest.raises(ValueError, match="no transitions"):
        env.pop_rollout(global_step=62)


def test_sb3_optimizer_learns_on_the_learned_reward() -> None:
    calls = []

    def reward_fn(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        calls.append(len(obs))
        return (actions == 1).astype(np.float32)  # "always push right"

    opt = SB3Optimizer(
        "CartPole-v1", "PPO", reward_fn=reward_fn, n_envs=2, seed=0,
        algo_kwargs={"n_steps": 64, "batch_size": 64, "n_epochs": 4, "learning_rate": 3e-3},
    )  # fmt: skip
    before = _params(opt)
    probe = torch.as_tensor(np.random.default_rng(0).normal(0, 0.05, (64, 4)), dtype=torch.float32)

    def p_right() -> float:
        with torch.no_grad():
            return opt.algo.policy.get_distribution(probe).distribution.probs[:, 1].mean().item()

    p_before = p_right()
    rollout = opt.collect(100)
    assert rollout.n_envs == 2 and rollout.n_steps >= 100
    assert rollout.obs.shape[:2] == rollout.actions.shape == rollout.true_rewards.shape
    assert sum(calls) >= 200 and opt.global_step == rollout.n_steps * 2
    assert not torch.equal(before, _params(opt))
    metrics = opt.update(rollout)
    assert metrics["charts/global_step"] == opt.global_step and metrics["charts/updates"] > 0
    # learning on "push right" makes the policy push right more often
    opt.collect(256)
    assert p_right() > p_before + 0.05
    returns = opt.evaluate(n_episodes=2, seed=0)
    assert len(returns) == 2 and all(r >= 1 for r in returns)


def test_sb3_optimizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown SB3 algorithm"):
        SB3Optimizer("CartPole-v1", "NoSuchAlgo")
    with pytest.raises(ValueError, match="unknown environment"):
        SB3Optimizer("NoSuchEnv-v0")
    opt = SB3Optimizer("CartPole-v1", algo_kwargs={"n_steps": 32, "batch_size": 32})
    with pytest.raises(ValueError, match="n_steps"):
        opt.collect(0)
