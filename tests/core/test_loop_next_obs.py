"""OnPolicyLoop stores the true final observation (not the autoreset one) as `next_obs` where an
episode ends, bootstraps truncations from V of that observation and not terminations."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.core.loops import OnPolicyLoop, TrainerConfig


class Clock(gym.Env):
    """obs = [100 * episode + t]; reward 1 per step; ends at t = `length`, by truncation
    (a time limit) or termination."""

    def __init__(self, length: int, truncate: bool):
        self.length, self.truncate = length, truncate
        self.observation_space = gym.spaces.Box(-1e6, 1e6, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode, self.t = -1, 0

    def _obs(self):
        return np.array([100.0 * self.episode + self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        end = self.t == self.length
        return self._obs(), 1.0, end and not self.truncate, end and self.truncate, {}


class ValueIsObs:
    """A stub learner whose V(s) is the observation itself."""

    gamma, gae_lambda = 0.5, 1.0

    def act(self, obs, deterministic=False):
        n = obs.shape[0]
        return TensorDict({"action": torch.zeros(n, dtype=torch.int64), "logp": torch.zeros(n), "value": obs[:, 0].clone()},
                          batch_size=[n])

    def value(self, obs):
        return obs[:, 0].clone()

    def update(self, batch):
        return {}


def rollout(T=7):
    envs = gym.vector.SyncVectorEnv([lambda: Clock(3, truncate=True), lambda: Clock(2, truncate=False)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    loop = OnPolicyLoop(ValueIsObs(), envs, TrainerConfig(progress=False, tensorboard=False), T)
    loop.collect()
    return loop.buffer.data


def test_next_obs_is_the_final_observation_at_truncation_and_termination():
    d = rollout()
    # env 0 (truncated every 3 steps): obs 0,1,2 | 100,101,102 | 200; the step from 2 ends the episode in 3
    assert d["obs"][:, 0, 0].tolist() == [0, 1, 2, 100, 101, 102, 200]
    assert d["next_obs"][:, 0, 0].tolist() == [1, 2, 3, 101, 102, 103, 201]
    assert d["truncated"][:, 0].tolist() == [False, False, True, False, False, True, False]
    assert not d["terminated"][:, 0].any()
    # env 1 (terminated every 2 steps)
    assert d["next_obs"][:, 1, 0].tolist() == [1, 2, 101, 102, 201, 202, 301]
    assert d["terminated"][:, 1].tolist() == [False, True, False, True, False, True, False]
    torch.testing.assert_close(d["next_value"], d["next_obs"][..., 0])  # V(true next obs)


def test_truncation_bootstraps_from_the_final_observation():
    d = rollout()
    from rlx.core.buffers import RolloutBuffer

    buf = RolloutBuffer(7, 2)
    buf.data, buf.t = d, 7
    out = buf.compute_advantages(0.5, 1.0)
    # truncated step t=2 of env 0: ret = r + gamma * V(final obs 3) = 1 + 1.5, and the recursion is cut
    assert float(out["ret"][2, 0]) == pytest.approx(2.5)
    # terminated step t=1 of env 1: ret = r (no bootstrap)
    assert float(out["ret"][1, 1]) == pytest.approx(1.0)
    # t=1 of env 0: r + gamma * ret[t=2]
    assert float(out["ret"][1, 0]) == pytest.approx(1 + 0.5 * 2.5)
