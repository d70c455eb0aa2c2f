"""Atari at a usable speed (#13 item 5): the preset, the A3C policy torso, scoring in the env loop, small checkpoints."""

from __future__ import annotations

import io
import zlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.control.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from prefrl.control.config import ControlConfig, is_atari
from prefrl.control.policies import IMAGE_TORSOS, ActorCritic
from prefrl.control.presets import ATARI, atari_config

runner = CliRunner()


@pytest.fixture
def built(monkeypatch):
    """The ControlConfig `control train` builds, without running anything."""
    import prefrl.control.loop as loop

    seen = {}

    class Capture:
        def __init__(self, cfg, **_):
            seen["cfg"] = cfg
            raise ValueError("captured")

    monkeypatch.setattr(loop, "PreferenceLoop", Capture)

    def build(*args: str) -> ControlConfig:
        result = runner.invoke(app, ["control", "train", *args])
        assert "captured" in result.output, result.output
        return seen["cfg"]

    return build


def test_atari_ids_take_the_preset_for_options_not_given(built):
    cfg = built("--env", "ALE/Pong-v5", "--labels", "500", "--steps", "200000", "--update-epochs", "3")
    assert cfg.n_envs == ATARI["n_envs"] and cfg.ppo.num_steps == ATARI["ppo.num_steps"]
    assert cfg.policy_cnn == "a3c" and cfg.reward.steps_per_round == ATARI["reward.steps_per_round"]
    assert cfg.reward.frames_per_segment == ATARI["reward.frames_per_segment"] and cfg.pool_size == ATARI["pool_size"]
    assert cfg.ppo.update_epochs == 3  # given on the command line: kept
    assert cfg == atari_config(labels=500, steps=200_000, ppo=cfg.ppo, run_dir=cfg.run_dir)  # one table for CLI and API


def test_reward_epochs_given_for_atari_mean_epochs_not_the_presets_steps(built):
    cfg = built("--env", "ALE/Pong-v5", "--reward-epochs", "2")
    assert cfg.reward.epochs == 2 and cfg.reward.steps_per_round is None
    assert cfg.reward.frames_per_segment == ATARI["reward.frames_per_segment"]


def test_other_envs_keep_the_control_defaults(built):
    cfg = built("--env", "HalfCheetah-v5")
    default = ControlConfig()
    assert cfg.n_envs == default.n_envs and cfg.ppo == default.ppo and cfg.reward == default.reward


def test_is_atari_reads_the_env_name_of_the_module_form():
    assert is_atari("ALE/Pong-v5") and is_atari("mygames:ALE/Pong-v5") and is_atari("PongNoFrameskip-v4")
    assert not is_atari("HalfCheetah-v5") and not is_atari("pointgoal:PointGoal-v0")


def test_the_a3c_torso_is_the_papers_and_cheaper_than_the_nature_cnn():
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    nets = {name: ActorCritic(space, gym.spaces.Discrete(6), cnn=name) for name in IMAGE_TORSOS}
    convs = [m for m in nets["a3c"].torso if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(16, 8, 4), (32, 4, 2)]
    assert nets["a3c"].actor_head.in_features == 256 and nets["nature"].actor_head.in_features == 512
    n_params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    assert n_params["a3c"] < n_params["nature"] / 2
    logits, value = nets["a3c"](torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
    assert logits.shape == (3, 6) and value.shape == (3,)
    with pytest.raises(ValueError, match="unknown policy CNN"):
        ActorCritic(space, gym.spaces.Discrete(6), cnn="resnet")


def test_old_configs_without_policy_cnn_resume_with_the_nature_cnn():
    data = ControlConfig(env_id="ALE/Pong-v5", n_envs=1, steps=4096).to_dict()
    del data["policy_cnn"]
    assert ControlConfig.from_dict(data).policy_cnn == "nature"


def test_image_policies_score_their_steps_in_the_env_loop_as_the_batched_scoring_would():
    import ale_py  # noqa: F401 - a declared dependency

    from prefrl.control.config import control_ppo_config
    from prefrl.control.envs import make_vec_env
    from prefrl.control.ppo_agent import PPOAgent

    agent = PPOAgent(make_vec_env("ALE/Pong-v5", 2, 0), control_ppo_config(num_steps=12, num_minibatches=4), seed=0, cnn="a3c")
    rollout = agent.collect()
    logprobs, values = agent._score(rollout.policy_obs, rollout.policy_actions)
    torch.testing.assert_close(rollout.logprobs, logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rollout.values, values, atol=1e-5, rtol=1e-5)
    assert agent.update(rollout, np.ones((12, 2), np.float32))["charts/updates"] == 1.0


def test_checkpoints_are_compressed_and_uncompressed_ones_still_load(tmp_path):
    frames = np.zeros((64, 4, 84, 84), np.uint8)  # Pong's background: the bulk of an Atari pool
    frames[:, :, 40:44, 10:12] = 236
    path = save_checkpoint(tmp_path, {"frames": frames})
    assert path.stat().st_size < frames.nbytes / 20
    np.testing.assert_array_equal(load_checkpoint(tmp_path)["frames"], frames)
    buffer = io.BytesIO()  # a checkpoint written before the compression
    torch.save({"version": 1, "x": 3}, buffer)
    path.write_bytes(buffer.getvalue())
    assert load_checkpoint(tmp_path)["x"] == 3
    path.write_bytes(zlib.compress(b"not a torch file"))
    with pytest.raises(CheckpointError, match="corrupted or unreadable"):
        load_checkpoint(tmp_path)


def test_training_envs_step_in_ale_pys_vector_env_with_the_gymnasium_paths_observations():
    import ale_py  # noqa: F401 - a declared dependency
    from ale_py.vector_env import AtariVectorEnv

    from prefrl.control.envs import make_env, make_vec_env

    fast, slow, single = make_vec_env("ALE/Pong-v5", 3, 7), make_vec_env("ALE/Pong-v5", 3, 7, ale_vector=False), make_env("ALE/Pong-v5", 7)
    try:
        assert isinstance(fast.unwrapped, AtariVectorEnv) and not isinstance(slow.unwrapped, AtariVectorEnv)
        assert fast.single_observation_space == slow.single_observation_space == single.observation_space  # (4, 84, 84) uint8
        assert fast.single_action_space == slow.single_action_space == single.action_space  # Pong's 6 actions
        assert fast.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        obs, _ = fast.reset(seed=7)
        ref, _ = slow.reset(seed=7)
        # An episode's first stack repeats its first frame, as FrameStackObservation does (ale-py pads zeros).
        assert all(np.array_equal(o[:, i], o[:, -1]) for o in (obs, ref) for i in range(3))
        assert obs[0, -1].mean() == pytest.approx(ref[0, -1].mean(), rel=0.05)  # the same screen, resized alike
        again, _ = make_vec_env("ALE/Pong-v5", 3, 7).reset(seed=7)
        np.testing.assert_array_equal(obs, again)  # seeded
        obs, *_ = fast.step(np.zeros(3, np.int64))
        assert not np.array_equal(obs[:, 0], obs[:, -1]) or obs[:, -1].std() > 0  # a real stack after a step
    finally:
        fast.close()
        slow.close()
        single.close()


def test_evaluation_keeps_the_gymnasium_path_that_the_clip_renders_through(monkeypatch):
    import prefrl.control.ppo_agent as ppo_agent

    seen = []
    real = ppo_agent.make_vec_env
    monkeypatch.setattr(ppo_agent, "make_vec_env", lambda *a, **k: seen.append(k) or real(*a, **k))
    returns = ppo_agent.evaluate_policy(lambda obs, deterministic: np.zeros(len(obs), np.int64), "ALE/Pong-v5", 1, seed=3)
    assert seen and seen[0]["ale_vector"] is False
    assert returns[0] <= -20  # NOOP loses Pong
