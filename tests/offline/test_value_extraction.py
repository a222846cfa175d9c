"""An offline dataset where behaviour cloning fails and value-based extraction succeeds.

Two-step task: from s0 the action a0 moves to s1 = a0; the second step pays -(s1 - 0.8)^2 and
terminates. The data mixes a bad mode (70%, a0 ~ -0.6) and a good one (30%, a0 ~ 0.8), so the
first step's reward is 0 for both and only a critic that bootstraps V(s1) can tell them apart.
BC imitates the mixture (a0 < 0); IQL + AWR and TD3 + BC pick the good mode.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic
from rlx.algos.registry import preset_config

OBS = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
GOOD = 0.8


def dataset(n: int = 1500, seed: int = 0) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    good = torch.rand(n, generator=gen) < 0.3
    a0 = (torch.where(good, GOOD, -0.6) + 0.1 * torch.randn(n, generator=gen)).clamp(-1, 1)
    a1 = torch.rand(n, generator=gen) * 2 - 1
    zeros, ones = torch.zeros(n), torch.ones(n)
    first = {"obs": torch.stack([zeros, zeros], 1), "action": a0[:, None], "reward": zeros,
             "next_obs": torch.stack([a0, ones], 1), "terminated": torch.zeros(n, dtype=torch.bool)}
    second = {"obs": torch.stack([a0, ones], 1), "action": a1[:, None], "reward": -(a0 - GOOD) ** 2,
              "next_obs": torch.stack([a0, 2 * ones], 1), "terminated": torch.ones(n, dtype=torch.bool)}
    return TensorDict({k: torch.cat([first[k], second[k]]) for k in first}, batch_size=[2 * n])


def train(cfg, steps: int) -> float:
    torch.manual_seed(0)
    data = dataset()
    learner = OfflineActorCritic(cfg, OBS, ACT, total_steps=steps)
    learner.set_dataset_stats(data["obs"])
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        learner.update(data[torch.randint(len(data), (256,), generator=gen)])
    return float(learner.act(torch.zeros(1, 2), deterministic=True)["action"][0, 0])  # the first-step action a0


COMMON = dict(hidden=[32, 32], normalize_reward=False, actor_lr=1e-3, critic_lr=1e-3, gamma=0.99)


def test_behaviour_cloning_imitates_the_mixture():
    a0 = train(preset_config("bc", **COMMON), 300)
    assert a0 < 0.0  # the mixture's mean (0.7 * -0.6 + 0.3 * 0.8 = -0.18), far from the good mode


@pytest.mark.parametrize("cfg", [IQLConfig(expectile=0.9, awr_alpha=3.0, tau=0.02, **COMMON),
                                 preset_config("td3bc", extraction="ddpg_bc", bc_alpha=0.1, tau=0.02, **COMMON)],
                         ids=["iql_awr", "td3_ddpgbc"])
def test_value_based_extraction_picks_the_good_mode(cfg):
    a0 = train(cfg, 500)
    assert a0 > 0.55, f"first action {a0:.2f}; the good mode is {GOOD}"
