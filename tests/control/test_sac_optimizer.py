"""`--optimizer sac`: our SAC behind the loop's optimiser seam, relabelled after every reward round (PEBBLE),
the unsupervised pre-training phase, and the SURF switches."""

from __future__ import annotations

import go_right_env
import numpy as np
import pytest

from prefrl.control.config import ControlConfig
from prefrl.control.envs import make_vec_env
from prefrl.control.loop import PreferenceLoop
from prefrl.control.sac_optimizer import SACOptimizer
from prefrl.reward.trainer import RewardTrainerConfig
from prefrl.rl.ppo import PPOConfig
from prefrl.rl.sac import SACConfig


def sac_config(tmp_path, **overrides) -> ControlConfig:
    kwargs = dict(
        env_id=go_right_env.ENV_ID, labels=60, steps=64 * 20, optimizer="sac", n_envs=1, segment_steps=10,
        pool_size=128, reward=RewardTrainerConfig(epochs=5, lr=3e-3), run_dir=str(tmp_path / "run"), seed=0,
        ppo=PPOConfig(num_steps=64), sac=SACConfig(learning_starts=128, batch_size=64, hidden=(32, 32)),
        progress=False, checkpoint_minutes=60.0,
    )  # fmt: skip
    kwargs.update(overrides)
    return ControlConfig(**kwargs)


def _mean_return(episodes, first: bool, n: int = 5) -> float:
    chosen = episodes[:n] if first else episodes[-n:]
    return float(np.mean([r for _, r in chosen]))


def test_collect_stores_transitions_and_update_writes_the_learned_rewards() -> None:
    opt = SACOptimizer(make_vec_env(go_right_env.ENV_ID, 2, seed=0), SACConfig(learning_starts=10, batch_size=8,
                                                                               hidden=(8,)), seed=0)  # fmt: skip
    rollout = opt.collect(60)  # crosses an episode end (horizon 50)
    assert rollout.obs.shape == (60, 2, 2) and rollout.true_rewards.shape == (60, 2)
    assert len(opt.buffer) == 120 and rollout.episode_returns.size == 2
    # the stored next obs of an episode's last step is its final obs, not the reset one
    last = np.nonzero(rollout.dones[:, 0])[0][0]
    row = last * 2  # rows are stored (t, n) in order
    assert opt.buffer.next_obs[row, 1] == pytest.approx(1.0) and rollout.obs[last + 1, 0, 1] == 0.0
    rewards = np.arange(120, dtype=np.float32).reshape(60, 2)
    metrics = opt.update(rollout, rewards)
    assert np.array_equal(opt.buffer.rewards[:120], rewards.reshape(-1))
    assert metrics["charts/updates"] == 120  # one SAC step per env step once past learning_starts
    with pytest.raises(ValueError, match="collect"):
        opt.update(rollout, rewards)


def test_config_checks_for_sac_and_its_phases(tmp_path) -> None:
    with pytest.raises(ValueError, match="pretrain_steps needs optimizer 'sac'"):
        sac_config(tmp_path, optimizer="ppo", pretrain_steps=128)
    with pytest.raises(ValueError, match="synchronously"):
        sac_config(tmp_path, asynchronous=True)
    with pytest.raises(ValueError, match="pseudo_label_threshold"):
        sac_config(tmp_path, pseudo_label_threshold=0.3)
    cfg = sac_config(tmp_path, pretrain_steps=128, crop_fraction=0.8)
    assert ControlConfig.from_dict(cfg.to_dict()) == cfg


def run_with_relabel_check(cfg: ControlConfig) -> tuple[PreferenceLoop, list[int]]:
    """Runs the loop; after every relabel, checks that each stored reward is the current ensemble's."""
    loop = PreferenceLoop(cfg)
    relabels = []
    inner = loop.agent.relabel

    def spy(reward_fn):  # noqa: ANN001, ANN202 - test double
        inner(reward_fn)
        buf = loop.agent.buffer
        n = len(buf)
        relabels.append(n)
        np.testing.assert_allclose(buf.rewards[:n], loop.reward.rewards(buf.obs[:n], buf.actions[:n]), rtol=1e-5)

    loop.agent.relabel = spy
    loop.run()
    return loop, relabels


def test_the_replay_buffer_always_holds_the_current_ensembles_rewards(tmp_path) -> None:
    loop, relabels = run_with_relabel_check(sac_config(tmp_path, steps=64 * 9, labels=20))
    assert loop.counters.reward_rounds >= 4 and len(relabels) == loop.counters.reward_rounds
    assert relabels == sorted(relabels) and relabels[-1] == loop.counters.global_step
    buf = loop.agent.buffer
    np.testing.assert_allclose(buf.rewards[: len(buf)], loop.reward.rewards(buf.obs[: len(buf)], buf.actions[: len(buf)]),
                               rtol=1e-5)  # fmt: skip
    assert loop.agent.agent.n_updates > 0


@pytest.mark.slow
def test_sac_learns_go_right_from_preferences_alone(tmp_path) -> None:
    # ≈ 1 to 2 min on 2 shared cores
    loop, _ = run_with_relabel_check(sac_config(tmp_path))
    first, last = _mean_return(loop.history.episodes, True), _mean_return(loop.history.episodes, False)
    assert abs(first) < 10 and last > first + 15, (first, last)


def test_pretraining_and_surf_run_end_to_end(tmp_path) -> None:
    cfg = sac_config(tmp_path, steps=64 * 8, labels=20, pretrain_steps=192, pseudo_label_threshold=0.9,
                     crop_fraction=0.6)  # fmt: skip
    loop = PreferenceLoop(cfg)
    updates, extras = [], []
    inner, inner_train = loop.agent.pretrain_update, loop.reward.train
    loop.agent.pretrain_update = lambda rollout: updates.append(loop.counters.global_step) or inner(rollout)
    loop.reward.train = lambda pairs, counters, extra=None: extras.append((len(pairs), extra)) or inner_train(
        pairs, counters, extra)
    loop.run()
    assert updates == [64, 128, 192]  # the unsupervised phase, before any label was asked
    assert loop.agent.pretrained and loop.agent.critic_reset  # learned-reward updates began with fresh critics
    assert loop.agent.agent.n_updates > 0
    assert loop.store.count_comparisons() == cfg.labels
    # every round fitted SURF's extra pairs too: one crop per labelled pair (μ kept), plus pseudo-labels
    assert extras and all(len(extra) >= n for n, extra in extras)
    assert any(len(extra) > n for n, extra in extras)
    for n, extra in extras:
        crops = [p for p in extra if "crop_start" in p[0].meta]
        assert len(crops) == n and all(6 <= len(a) == len(b) <= 10 for a, b, _ in crops)
    assert loop.reward.n_trained_pairs == cfg.labels  # the labelled ones


def test_cli_train_with_sac_pretraining_and_surf_then_eval(tmp_path) -> None:
    from typer.testing import CliRunner

    from prefrl.cli import app

    runner, run = CliRunner(), tmp_path / "run"
    args = ["control", "train", "--env", go_right_env.ENV_ID, "--labels", "20", "--steps", str(64 * 7), "--n-envs", "1",
            "--n-steps", "64", "--segment-steps", "10", "--reward-epochs", "3", "--no-progress", "--optimizer", "sac",
            "--sac-learning-starts", "64", "--sac-batch-size", "32", "--pretrain-steps", "128",
            "--pseudo-label-threshold", "0.95", "--crop-fraction", "0.8", "--run-dir", str(run)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = ControlConfig.from_dict(__import__("json").loads((run / "config.json").read_text()))
    assert (cfg.optimizer, cfg.pretrain_steps, cfg.sac.batch_size, cfg.crop_fraction) == ("sac", 128, 32, 0.8)
    # the checkpoint restores SAC with its replay buffer
    from prefrl.control.run_state import load_agent

    agent, _ = load_agent(run)
    assert isinstance(agent, SACOptimizer) and len(agent.buffer) == 64 * 7 and agent.agent.n_updates > 0
    result = runner.invoke(app, ["control", "eval", str(run), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, [*args[:-1], str(tmp_path / "other"), "--optimizer", "ppo"])
    assert bad.exit_code != 0 and "--pretrain-steps needs optimizer 'sac'" in bad.output
