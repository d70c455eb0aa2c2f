"""A toy control task with a known reward for the preference-loop tests: walk right on a line.

obs = [x, t / horizon], action a ∈ [-1, 1], x ← x + 0.1·a, reward r = a. A random policy
earns ≈ 0 per episode, the best one ``horizon``. Importing this module registers
``prefrl-test/GoRight-v0`` (also in subprocesses: ``PYTHONPATH=tests/control``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "prefrl-test/GoRight-v0"
HORIZON = 50


class GoRightEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, horizon: int = HORIZON) -> None:
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.state = np.zeros(2, np.float64)  # [x, t]: a restorable simulator state

    def _obs(self) -> np.ndarray:
        return np.array([self.state[0], self.state[1] / self.horizon], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = np.array([self.np_random.uniform(-0.1, 0.1), 0.0])
        return self._obs(), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        self.state = self.state + np.array([0.1 * a, 1.0])
        return self._obs(), a, False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=GoRightEnv, max_episode_steps=HORIZON)
