import gymnasium as gym
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class CountEnv(gym.Env):
    """obs = [t, parity of the episode]; even episodes terminate after 4 steps, odd ones run
    until a TimeLimit truncates them; reward = t + 1. Actions are ignored."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def __init__(self):
        self.episode, self.t = -1, 0

    def _obs(self):
        return np.array([self.t, self.episode % 2], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.episode % 2 == 0 and self.t == 4, False, {}


class PointEnv(gym.Env):
    """x' = clip(x + 0.25 a, -1, 1), reward -|x'|, 20 steps (a TimeLimit truncates), start
    uniform in [-1, 1]: a continuous control task small nets learn in a few thousand steps
    (random actions: about -10 per episode, steering to 0: about -2)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1)
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.25 * float(action[0]), -1, 1))
        return np.array([self.x], np.float32), -abs(self.x), False, False, {}


def count_env():
    return gym.wrappers.TimeLimit(CountEnv(), 6)


def point_env():
    return gym.wrappers.TimeLimit(PointEnv(), 20)
