"""Custom envs that break in one way each (`env.entry_point=tests.reliability.broken_envs:<Name>`)."""

import gymnasium as gym
import numpy as np


class Line(gym.Env):
    """A well-behaved base: walk on a line of 5 cells, 1-d observation, episodes of <= 50 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fail_at: int = 30):
        self.fail_at, self.t, self.total, self.pos = fail_at, 0, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.pos / 4], dtype=np.float32)

    def _reward(self):
        return 1.0 if self.pos == 4 else -0.01

    def step(self, action):
        self.t += 1
        self.total += 1
        self.pos = int(np.clip(self.pos + (1 if action == 1 else -1), 0, 4))
        return self._obs(), self._reward(), self.pos == 4, self.t >= 50, {}


class RaisesMidRun(Line):
    """step() raises on its `fail_at`-th call (per env copy)."""

    def step(self, action):
        if self.total + 1 >= self.fail_at:
            raise ValueError("simulator lost contact")
        return super().step(action)


class NaNRewardMidRun(Line):
    def _reward(self):
        return float("nan") if self.total >= self.fail_at else super()._reward()


class InfObsMidRun(Line):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def _obs(self):
        return np.array([np.inf if self.total >= self.fail_at else self.pos / 4], dtype=np.float32)


class NeverEnds(Line):
    """Never terminates nor truncates: evaluation must still end."""

    def step(self, action):
        obs, r, _, _, info = super().step(action)
        return obs, r, False, False, info


class WrongObsShape(Line):
    def _obs(self):
        return np.zeros(3, dtype=np.float32)


class WrongObsDtype(Line):
    def _obs(self):
        return np.array([self.pos], dtype=np.int64)


class NaNOnReset(Line):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([np.nan], dtype=np.float32), {}


class ResetRaises(Line):
    def reset(self, *, seed=None, options=None):
        raise RuntimeError("no licence server")


class NoSpaces(gym.Env):
    def reset(self, *, seed=None, options=None):
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 0.0, True, False, {}


class StepReturnsFour(Line):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r, term or trunc, info


class ConstructorNeedsArg(Line):
    def __init__(self, size):
        super().__init__()


class ObsOutsideSpace(Line):
    def _obs(self):
        return np.array([5.0], dtype=np.float32)


def not_an_env_factory():
    return "not an env"
