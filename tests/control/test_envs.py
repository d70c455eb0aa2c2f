"""Env construction, hygiene wrappers and simulator state."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from prefrl.control.envs import (
    FixedHorizonWrapper,
    SimStateWrapper,
    make_env,
    make_vec_env,
    restore,
)


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("Hopper-v5", {}),
        ("Hopper-v5", {"fixed_horizon": 50, "terminal_penalty": 10.0}),
        ("HalfCheetah-v5", {"drop_ctrl_cost": True}),
        ("CartPole-v1", {"fixed_horizon": 30}),
        ("Pendulum-v1", {}),
        ("ALE/Pong-v5", {}),
    ],
)
def test_check_env_passes_on_shipped_wrappers(env_id: str, kwargs: dict) -> None:
    env = make_env(env_id, seed=0, **kwargs)
    check_env(env, skip_render_check=True)
    env.close()


def test_unknown_env_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown environment 'NoSuchEnv-v0'"):
        make_vec_env("NoSuchEnv-v0")


class _DictObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Discrete(2)


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.MultiDiscrete([2, 3])


@pytest.mark.parametrize("cls, what", [(_DictObsEnv, "observation space"), (_MultiDiscreteEnv, "action space")])
def test_unsupported_spaces_are_value_errors(cls: type, what: str) -> None:
    env_id = f"prefrl-test/{cls.__name__}-v0"
    gym.register(env_id, entry_point=cls)
    try:
        with pytest.raises(ValueError, match=f"unsupported {what}"):
            make_vec_env(env_id)
    finally:
        del gym.registry[env_id]


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="n_envs"):
        make_vec_env("CartPole-v1", n_envs=0)
    with pytest.raises(ValueError, match="fixed_horizon"):
        make_vec_env("CartPole-v1", fixed_horizon=0)
    with pytest.raises(ValueError, match="ctrl_cost_weight"):
        make_vec_env("CartPole-v1", drop_ctrl_cost=True)
    with pytest.raises(ValueError, match="terminal_penalty"):
        make_vec_env("Hopper-v5", terminal_penalty=1.0)


def test_drop_ctrl_cost_sets_weight_to_zero() -> None:
    env = make_env("HalfCheetah-v5", seed=0, drop_ctrl_cost=True)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(6, np.float32))
    assert env.unwrapped._ctrl_cost_weight == 0.0
    assert info["reward_ctrl"] == 0.0


def test_fixed_horizon_turns_termination_into_penalty_and_continues() -> None:
    # CartPole pushed one way falls within ~10 steps; with a horizon of 60 it must keep going.
    env = make_env("CartPole-v1", seed=0, fixed_horizon=60, terminal_penalty=5.0, record_sim_state=False)
    assert isinstance(env, FixedHorizonWrapper)
    env.reset(seed=0)
    rewards, inner_terms = [], []
    for t in range(60):
        obs, reward, terminated, truncated, info = env.step(1)
        rewards.append(reward)
        inner_terms.append(info["inner_terminated"])
        assert not terminated
        assert truncated == (t == 59)
    assert sum(inner_terms) >= 3
    # every inner termination costs the penalty: reward 1 − 5
    assert all(r == pytest.approx(-4.0) for r, d in zip(rewards, inner_terms, strict=True) if d)
    assert all(r == 1.0 for r, d in zip(rewards, inner_terms, strict=True) if not d)


def test_vector_env_same_step_autoreset_keeps_final_obs() -> None:
    envs = make_vec_env("CartPole-v1", n_envs=2, seed=0, fixed_horizon=5, record_sim_state=False)
    envs.reset()
    for _ in range(4):
        _, _, term, trunc, info = envs.step(np.zeros(2, np.int64))
        assert not (term | trunc).any()
    obs, _, term, trunc, info = envs.step(np.zeros(2, np.int64))
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all()
    final = np.stack(info["final_obs"])
    assert not np.allclose(final, obs)  # obs is the reset observation, final_obs the last one
    envs.close()


def test_sim_state_is_state_of_returned_obs_and_restores() -> None:
    env = make_env("Hopper-v5", seed=0)
    assert isinstance(env, SimStateWrapper)
    obs, info = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, *_, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
    state = info["sim_state"]
    assert state.shape == (env.unwrapped.model.nq + env.unwrapped.model.nv,)
    # Hopper's obs is qpos[1:] ‖ clip(qvel): the state must match the obs it came with.
    np.testing.assert_allclose(state[1:6], obs[:5])
    other = make_env("Hopper-v5", seed=3)
    other.reset(seed=3)
    restore(other, state)
    np.testing.assert_allclose(other.unwrapped._get_obs(), obs)
    with pytest.raises(ValueError, match="entries"):
        restore(other, state[:-1])


def test_sim_state_for_classic_control_and_none_for_atari() -> None:
    envs = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    obs, info = envs.reset()
    np.testing.assert_allclose(info["sim_state"], obs, rtol=1e-6)
    envs.close()
    pong = make_env("ALE/Pong-v5", seed=0)
    obs, info = pong.reset(seed=0)
    assert "sim_state" not in info
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
