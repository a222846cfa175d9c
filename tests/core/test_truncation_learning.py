"""PPO through OnPolicyLoop on a task where bootstrapping at the time limit decides the policy.

StayOrCashOut: one observation (no clock), `stay` pays 1 per step, `cash out` pays 6 and ends
the episode; a time limit cuts every episode after 4 steps. The time limit is not part of the
task: with gamma = 0.9, staying forever is worth 1 / (1 - 0.9) = 10 > 6, which a learner that
bootstraps V(final obs) at truncation finds. A loop that treated the time limit as a
termination would see staying worth at most 1 + 0.9 + 0.81 + 0.729 = 3.4 and cash out; the
same env reporting its limit as a termination shows that this outcome is what such a bug learns.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlx.algos import PPO, PPOConfig
from rlx.core.loops import OnPolicyLoop, TrainerConfig, seed_everything

STAY, CASH_OUT = 0, 1


class StayOrCashOut(gym.Env):
    def __init__(self, limit: int = 4, cash: float = 6.0, limit_is_termination: bool = False):
        self.limit, self.cash, self.limit_is_termination = limit, cash, limit_is_termination
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.ones(1, np.float32), {}

    def step(self, action):
        self.t += 1
        if action == CASH_OUT:
            return np.ones(1, np.float32), self.cash, True, False, {}
        end = self.t >= self.limit
        return np.ones(1, np.float32), 1.0, end and self.limit_is_termination, end and not self.limit_is_termination, {}


def train(limit_is_termination: bool, seed: int = 0) -> tuple[float, float, int]:
    """P(stay), V(obs) and the greedy action after 8192 env steps (about 1.5 s of CPU)."""
    seed_everything(seed)
    envs = gym.vector.SyncVectorEnv([lambda: StayOrCashOut(limit_is_termination=limit_is_termination)] * 8,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    cfg = PPOConfig(lr=3e-3, anneal_lr=False, num_steps=16, gamma=0.9, hidden=[16], num_minibatches=2,
                    update_epochs=4, ent_coef=0.0)
    learner = PPO(cfg, envs.single_observation_space, envs.single_action_space)
    OnPolicyLoop(learner, envs, TrainerConfig(total_steps=8192, eval_every=0, progress=False, tensorboard=False),
                 cfg.num_steps).run()
    obs = torch.ones(256, 1)
    with torch.no_grad():
        p_stay = float((learner.act(obs)["action"] == STAY).float().mean())
        value = float(learner.value(obs[:1])[0])
        greedy = int(learner.act(obs[:1], deterministic=True)["action"][0])
    return p_stay, value, greedy


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_bootstraps_the_time_limit_and_learns_to_stay(seed):
    torch.set_num_threads(1)
    p_stay, value, greedy = train(limit_is_termination=False, seed=seed)
    assert greedy == STAY and p_stay > 0.95, p_stay
    assert value == pytest.approx(10.0, abs=1.0)  # 1 / (1 - gamma), not the 3.4 a 4-step horizon gives
    # measured (seeds 0-2): P(stay) 1.00, V 10.00; with the limit as a termination P(stay) 0.40-0.50, V 5.6-6.1
    bug_stay, bug_value, _ = train(limit_is_termination=True, seed=seed)
    assert bug_stay < 0.7 and bug_value < 7.0, (bug_stay, bug_value)
