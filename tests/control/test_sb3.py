"""SB3 adapter: the learned-reward VecEnv wrapper and SB3Optimizer behind the loop's optimiser seam."""

from __future__ import annotations

import go_right_env
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv  # a dev dependency: missing is a failure

from prefrl.control.envs import make_env
from prefrl.control.sb3 import LearnedRewardVecEnv, SB3Optimizer


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
    rollout = opt.collect(64)
    assert rollout.n_envs == 2 and rollout.n_steps == 64
    assert rollout.obs.shape[:2] == rollout.actions.shape == rollout.true_rewards.shape
    assert opt.global_step == rollout.n_steps * 2
    assert torch.equal(before, _params(opt))  # collecting learns nothing: update() does
    metrics = opt.update(rollout)
    assert sum(calls) >= 128  # the learned reward of every collected step
    assert not torch.equal(before, _params(opt))
    assert metrics["charts/global_step"] == opt.global_step and metrics["charts/updates"] > 0
    assert "sb3/approx_kl" in metrics
    # learning on "push right" makes the policy push right more often
    for _ in range(4):
        opt.update(opt.collect(64))
    assert p_right() > p_before + 0.05


def test_sb3_ppo_improves_the_true_return_on_a_proxy_reward() -> None:
    """CartPole from a reward that never sees the env's (+1 per step): 'keep the pole upright'."""

    def upright(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return (1.0 - np.abs(obs[:, 2]) / 0.2095).astype(np.float32)  # 1 upright, 0 at the failure angle

    opt = SB3Optimizer(
        "CartPole-v1", "PPO", reward_fn=upright, n_envs=2, seed=0,
        algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 4, "learning_rate": 3e-3},
    )  # fmt: skip
    returns = []  # true returns of the episodes each rollout ended
    for _ in range(16):
        rollout = opt.collect(128)
        returns.append(rollout.episode_returns)
        opt.update(rollout)
    first, last = np.mean(np.concatenate(returns[:2])), np.mean(np.concatenate(returns[-6:]))
    assert first < 40  # a random policy: ≈ 22 steps
    assert last > first + 60, (first, last)


def test_sb3_optimizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown SB3 algorithm"):
        SB3Optimizer("CartPole-v1", "NoSuchAlgo")
    with pytest.raises(ValueError, match="unknown environment"):
        SB3Optimizer("NoSuchEnv-v0")
    opt = SB3Optimizer("CartPole-v1", algo_kwargs={"n_steps": 32, "batch_size": 32})
    with pytest.raises(ValueError, match="n_steps"):
        opt.collect(0)
    with pytest.raises(ValueError, match="rollout length"):
        opt.collect(16)


def _mean_return(episodes, first: bool, n: int = 10) -> float:
    chosen = episodes[:n] if first else episodes[-n:]
    return float(np.mean([r for _, r in chosen]))


@pytest.mark.parametrize("optimizer", ["sb3-ppo", pytest.param("sb3-sac", marks=pytest.mark.slow)])  # SAC: ≈ 1 min
def test_sb3_algorithm_improves_the_true_return_on_a_learned_reward(tmp_path, optimizer):
    """The preference loop with an SB3 optimiser: the true return rises well above a random policy's ≈ 0."""
    from prefrl.control.config import ControlConfig
    from prefrl.control.loop import PreferenceLoop
    from prefrl.reward.trainer import RewardTrainerConfig
    from prefrl.rl.ppo import PPOConfig

    steps = 128 * 16 if optimizer == "sb3-ppo" else 64 * 20
    cfg = ControlConfig(
        env_id=go_right_env.ENV_ID, labels=60, steps=steps, optimizer=optimizer, n_envs=1, segment_steps=10,
        pool_size=128, reward=RewardTrainerConfig(epochs=5, lr=3e-3), run_dir=str(tmp_path / "run"), seed=0,
        ppo=PPOConfig(num_steps=128 if optimizer == "sb3-ppo" else 64, num_minibatches=4, update_epochs=10, learning_rate=3e-3),
        progress=False, checkpoint_minutes=60.0,
    )  # fmt: skip
    loop = PreferenceLoop(cfg)
    loop.run()
    first, last = _mean_return(loop.history.episodes, True), _mean_return(loop.history.episodes, False)
    assert abs(first) < 10  # random: ≈ 0 of a possible 50
    assert last > first + 15, (first, last)
    assert loop.store.count_comparisons() == cfg.labels
    # the run's checkpoint restores the SB3 policy for evaluation
    from prefrl.control.run_state import load_agent

    agent, _ = load_agent(loop.run_dir)
    assert np.mean(agent.evaluate(cfg.env_id, 3, seed=1)) > first + 15
