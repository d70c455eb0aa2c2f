"""The backflip judge: what a person watching the clip would reward, as a function of the segment.

Hopper-v5 observations are qpos[1:] ‖ qvel: obs[:, 0] is the torso height z, obs[:, 1] the torso
angle (the ``rooty`` hinge, axis (0, +1, 0) in gymnasium's hopper.xml: a growing angle tips the head
forwards, towards +x, the way the env reward makes it hop) and obs[:, 7] its angular velocity. A
backward turn is therefore a *falling* angle (checked against MuJoCo in
tests/examples/test_backflip.py). A backflip turns the torso backwards while off the ground, so each
step scores the backward rotation it makes, a little more when the torso is high. The env
reward (forward speed + alive bonus) is never used: ``--teacher judge`` sees only this score.
"""

from __future__ import annotations

import numpy as np

DT = 0.008  # Hopper-v5's frame_skip 4 × timestep 0.002


def score_segment(segment) -> np.ndarray:
    """Per-step scores (T,): backward rotation in radians, weighted up with the height above 1 m."""
    obs = np.asarray(segment.obs, dtype=np.float64)
    height, angular_velocity = obs[:, 0], obs[:, 7]
    rotation = -angular_velocity * DT  # (T,) radians turned backwards this step (head towards −x)
    return rotation * (1.0 + np.clip(height - 1.0, 0.0, 1.0))
