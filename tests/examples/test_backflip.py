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


def test_backflip_judge_prefers_turning_backwards_high_up():
    teacher = build_teacher("judge", np.random.default_rng(0), judge=f"{JUDGE}:score_segment", kind="myopic")
    back, forward, low = _hopper_segment(5.0), _hopper_segment(-5.0), _hopper_segment(5.0, height=0.9)
    assert teacher.scores(back).shape == (20,) and np.all(teacher.scores(back) > 0)
    assert teacher.answer([(back, forward), (forward, back), (back, low)]) == [1.0, 0.0, 1.0]
