"""examples/backflip: its judge scores backward rotation per step and loads as `--judge FILE.py:score_segment`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefrl.data.types import Segment
from prefrl.teachers import build_teacher

JUDGE = Path(__file__).resolve().parents[2] / "examples" / "backflip" / "judge.py"


def _hopper_segment(angular_velocity: float, height: float = 1.2, steps: int = 20) -> Segment:
    obs = np.zeros((steps, 11), np.float32)  # Hopper-v5: qpos[1:] (5) ‖ qvel (6)
    obs[:, 0], obs[:, 7] = height, angular_velocity
    return Segment(obs=obs, actions=np.zeros((steps, 3), np.float32), env_id="Hopper-v5")


def _judge():
    return build_teacher("judge", np.random.default_rng(0), judge=f"{JUDGE}:score_segment", kind="myopic")


def test_backflip_judge_prefers_turning_high_up_over_low():
    teacher = _judge()
    turn, low = _hopper_segment(-5.0), _hopper_segment(-5.0, height=0.9)
    assert teacher.scores(turn).shape == (20,)
    assert teacher.answer([(turn, low), (low, turn)]) == [1.0, 0.0]


def _spun_hopper(angular_velocity: float, steps: int = 10) -> tuple[Segment, float]:
    """A Hopper launched in the air spinning about its hinge; (its segment, head's x − torso's x at the end)."""
    import gymnasium as gym
    import mujoco

    env = gym.make("Hopper-v5")
    env.reset(seed=0)
    sim = env.unwrapped
    qpos, qvel = sim.init_qpos.copy(), np.zeros_like(sim.init_qvel)
    qpos[1] += 1.0  # high above the floor: nothing touches it while it turns
    qvel[2] = angular_velocity
    sim.set_state(qpos, qvel)
    obs = []
    for _ in range(steps):
        obs.append(sim._get_obs())
        sim.do_simulation(np.zeros(3), sim.frame_skip)
    torso = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    head_ahead = float(sim.data.xmat[torso].reshape(3, 3)[0, 2])  # x of the torso's long (head) axis
    env.close()
    segment = Segment(obs=np.asarray(obs, np.float32), actions=np.zeros((steps, 3), np.float32), env_id="Hopper-v5")
    return segment, head_ahead


def test_backflip_judge_scores_the_turn_that_tips_the_head_backwards_in_mujoco():
    # The sign is the physics', not a convention: the env reward runs towards +x, so a backward
    # turn moves the head towards −x. (A first version rewarded the opposite turn: a front flip.)
    backward, head_back = _spun_hopper(-5.0)
    forward, head_fwd = _spun_hopper(5.0)
    assert head_back < -0.1 and head_fwd > 0.1
    teacher = _judge()
    assert teacher.scores(backward).sum() > 0 > teacher.scores(forward).sum()
    assert teacher.answer([(backward, forward), (forward, backward)]) == [1.0, 0.0]


def test_the_backflip_env_lets_the_torso_turn_over_where_hopper_v5_resets_it():
    # The first backflip run could not flip: Hopper-v5 ends an episode past ±0.2 rad of torso tilt,
    # and --fixed-horizon turns that end into a reset to the standing pose.
    import sys

    from prefrl.control.envs import make_env

    sys.path.insert(0, str(JUDGE.parent))
    try:
        furthest = {}
        for env_id in ("Hopper-v5", "backflip_env:HopperBackflip-v0"):
            env = make_env(env_id, seed=0, fixed_horizon=1000)
            sim = env.unwrapped
            qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
            qvel[1], qvel[2] = 3.0, -8.0  # up and turning backwards
            sim.set_state(qpos, qvel)
            angles = []
            for _ in range(60):
                *_, truncated, info = env.step(np.zeros(3))
                assert not truncated
                angles.append(float(sim.data.qpos[2]))
            furthest[env_id] = -min(angles)
            env.close()
    finally:
        sys.path.remove(str(JUDGE.parent))
    assert furthest["Hopper-v5"] <= 0.25  # reset before it got past the healthy range
    assert furthest["backflip_env:HopperBackflip-v0"] > np.pi  # half a flip and on
