"""The control loop's PPO defaults (``control_ppo_config``: no value clipping, constant lr) and its true-reward PPO run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from prefrl.control.config import ControlConfig, control_ppo_config
from prefrl.control.presets import demo_config
from prefrl.rl.ppo import PPOConfig


def test_control_ppo_config_turns_off_value_clipping_and_annealing():
    cfg = control_ppo_config()
    assert isinstance(cfg, PPOConfig)
    assert cfg.clip_vloss is False and cfg.anneal_lr is False
    # everything else stays cleanrl's
    base = PPOConfig()
    assert (cfg.learning_rate, cfg.num_steps, cfg.clip_coef, cfg.update_epochs) == (
        base.learning_rate,
        base.num_steps,
        base.clip_coef,
        base.update_epochs,
    )


def test_control_ppo_config_overrides_win():
    cfg = control_ppo_config(num_steps=64, clip_vloss=True, anneal_lr=True)
    assert (cfg.num_steps, cfg.clip_vloss, cfg.anneal_lr) == (64, True, True)


def test_control_config_and_demo_use_the_control_defaults(tmp_path):
    cfg = ControlConfig(steps=4096, n_envs=2)
    assert cfg.ppo.clip_vloss is False and cfg.ppo.anneal_lr is False
    demo = demo_config(run_dir=str(tmp_path / "demo"), progress=False)
    assert demo.ppo.clip_vloss is False and demo.ppo.anneal_lr is False
    # a saved config round-trips with its own settings (old runs keep cleanrl's)
    old = ControlConfig(steps=4096, n_envs=2, ppo=PPOConfig(num_steps=512))
    assert ControlConfig.from_dict(old.to_dict()).ppo.clip_vloss is True


def _cartpole_returns(act, n_episodes: int = 8, seed: int = 100) -> np.ndarray:
    """True returns of ``n_episodes`` CartPole episodes (one per env) under ``act(obs) -> actions``."""
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1")] * n_episodes, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    try:
        obs, _ = envs.reset(seed=seed)
        returns, finished = np.zeros(n_episodes), np.zeros(n_episodes, bool)
        while not finished.all():
            obs, reward, terminated, truncated, _ = envs.step(act(obs))
            returns += np.where(finished, 0.0, reward)
            finished |= terminated | truncated
    finally:
        envs.close()
    return returns


def test_train_true_reward_ppo_returns_a_trained_agent(tmp_path):
    from prefrl.control.baseline import train_true_reward_ppo

    cfg = ControlConfig(
        env_id="CartPole-v1",
        steps=4096,
        n_envs=4,
        ppo=control_ppo_config(num_steps=64, num_minibatches=4, update_epochs=4, learning_rate=3e-3),
        run_dir=str(tmp_path / "run"),
        progress=False,
    )
    agent, episodes = train_true_reward_ppo(cfg)
    assert agent.updates == cfg.n_rollouts and agent.global_step == 4096
    # CartPole pays +1 per step, so any policy has a positive return: learning is measured against a
    # uniformly random policy (≈ 23 per episode), sampling the agent's actions as it did in training.
    rng = np.random.default_rng(0)
    random_return = _cartpole_returns(lambda obs: rng.integers(0, 2, len(obs))).mean()
    trained_return = _cartpole_returns(lambda obs: agent.act(obs, deterministic=False)).mean()
    assert 15 < random_return < 35
    assert trained_return > 4 * random_return, (trained_return, random_return)  # seed 0: ≈ 260 vs 23
    # and the training episodes themselves improved (the first are the untrained policy's)
    train_returns = [r for _, r in episodes]
    assert len(train_returns) > 20
    assert np.mean(train_returns[-10:]) > 3 * np.mean(train_returns[:10]), train_returns
    obs = np.zeros((3, 4), np.float32)
    assert agent.act(obs, deterministic=True).shape == (3,)
