"""Small custom envs used by the tests of plug-in environments."""

import gymnasium as gym
import numpy as np


class LineWorld(gym.Env):
    """Walk right on a line of `size` cells: +1 at the right end (terminated), -0.01 per step."""

    def __init__(self, size: int = 5):
        self.size = size
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def _obs(self):
        return np.array([self.pos / (self.size - 1)], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = int(np.clip(self.pos + (1 if action == 1 else -1), 0, self.size - 1))
        done = self.pos == self.size - 1
        return self._obs(), 1.0 if done else -0.01, done, False, {}


class WrongShapeEnv(LineWorld):
    def _obs(self):
        return np.zeros(3, dtype=np.float32)


class NaNEnv(LineWorld):
    observation_space = None

    def __init__(self, size: int = 5):
        super().__init__(size)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def _obs(self):
        return np.array([np.nan], dtype=np.float32)
