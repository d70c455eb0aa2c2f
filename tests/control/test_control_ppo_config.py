"""The control loop's PPO defaults (``control_ppo_config``): no value clipping, constant lr."""

from __future__ import annotations

from prefrl.control.config import ControlConfig, control_ppo_config
from prefrl.control.loop import demo_config
from prefrl.rl.ppo import PPOConfig


def test_control_ppo_config_turns_off_value_clipping_and_annealing():
    cfg = control_ppo_config()
    assert isinstance(cfg, PPOConfig)
    assert cfg.clip_vloss is False and cfg.anneal_lr is False
    # everything else stays cleanrl's
    base = PPOConfig()
    assert (cfg.lr, cfg.n_steps, cfg.clip_coef, cfg.update_epochs) == (
        base.lr,
        base.n_steps,
        base.clip_coef,
        base.update_epochs,
    )


def test_control_ppo_config_overrides_win():
    cfg = control_ppo_config(n_steps=64, clip_vloss=True, anneal_lr=True)
    assert (cfg.n_steps, cfg.clip_vloss, cfg.anneal_lr) == (64, True, True)


def test_control_config_and_demo_use_the_control_defaults(tmp_path):
    cfg = ControlConfig(steps=4096, n_envs=2)
    assert cfg.ppo.clip_vloss is False and cfg.ppo.anneal_lr is False
    demo = demo_config(run_dir=str(tmp_path / "demo"), progress=False)
    assert demo.ppo.clip_vloss is False and demo.ppo.anneal_lr is False
    # a saved config round-trips with its own settings (old runs keep cleanrl's)
    old = ControlConfig(steps=4096, n_envs=2, ppo=PPOConfig(n_steps=512))
    assert ControlConfig.from_dict(old.to_dict()).ppo.clip_vloss is True
