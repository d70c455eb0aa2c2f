"""``backflip_env:HopperBackflip-v0``: Hopper-v5 that may turn over (no healthy termination).

Hopper-v5 ends an episode once its torso tilts past ±0.2 rad (11.5°); under ``--fixed-horizon``
that end becomes a reset to the standing pose, so no episode could ever turn further than 11.5°
and a flip was impossible (the first run's furthest turn back was 10°). Christiano et al. 2017's
backflip needs the turn to go on, so this env is Hopper-v5 with ``terminate_when_unhealthy=False``:
its physics, observations and 1000-step limit are Hopper-v5's. Import this module (``run.py`` puts
it on ``PYTHONPATH``) and ``--env backflip_env:HopperBackflip-v0`` registers it.
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "HopperBackflip-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="gymnasium.envs.mujoco.hopper_v5:HopperEnv", max_episode_steps=1000,
                 kwargs={"terminate_when_unhealthy": False})
