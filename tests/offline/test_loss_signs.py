"""Signs, masks and weights of the offline actor-critic losses on hand-computed cases: the AWR
advantage, the IQL/TD3 targets at terminations, target-network use, Polyak direction and the
IQL reward scaling. Each test fails if one sign, mask or network is swapped."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic, expectile_loss, scale_rewards
from rlx.core.buffers import EpisodeStore
from rlx.core.learner import soft_update

OBS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


class Const(nn.Module):
    """A V network that returns `value(obs)` for every row: [B, 1]."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, obs):
        return self.fn(obs)[:, None]


def learner(**kw) -> OfflineActorCritic:
    torch.manual_seed(0)
    cfg = IQLConfig(hidden=[8], normalize_obs=False, actor_cosine_decay=False, **kw)
    return OfflineActorCritic(cfg, OBS, ACT)


def test_awr_weights_come_from_q_minus_v():
    ac = learner(value="iql", extraction="awr", awr_alpha=2.0, awr_max_weight=100.0)
    ac.v = Const(lambda o: torch.full((o.shape[0],), 0.5))
    obs, action = torch.zeros(3, 2), torch.tensor([[0.3], [-0.2], [0.3]])
    q_data = torch.tensor([1.5, 0.5, -0.5])  # advantages +1, 0, -1
    loss, info = ac.actor_loss(obs, action, q_data)
    w = torch.exp(2.0 * torch.tensor([1.0, 0.0, -1.0]))
    assert float(info["train/adv_mean"]) == pytest.approx(0.0, abs=1e-7)
    assert float(info["train/awr_weight_mean"]) == pytest.approx(float(w.mean()), rel=1e-6)
    logp = ac.actor.dist(obs).log_prob(action)
    assert float(loss.detach()) == pytest.approx(float(-(w * logp).mean().detach()), rel=1e-6)
    # the row with the larger advantage pulls harder: the gradient of the log std follows w
    (g_up,) = torch.autograd.grad(ac.actor_loss(obs[:1], action[:1], q_data[:1])[0], ac.actor.log_std)
    (g_down,) = torch.autograd.grad(ac.actor_loss(obs[2:], action[2:], q_data[2:])[0], ac.actor.log_std)
    assert g_up.abs().item() == pytest.approx(math.exp(4.0) * g_down.abs().item(), rel=1e-4)


def test_iql_q_target_does_not_bootstrap_through_terminations():
    ac = learner(value="iql", gamma=0.9)
    ac.v = Const(lambda o: torch.full((o.shape[0],), 5.0))
    obs, action = torch.randn(4, 2), torch.rand(4, 1) * 2 - 1
    reward = torch.tensor([1.0, 1.0, -1.0, 0.0])
    terminated = torch.tensor([False, True, False, True])
    loss, _ = ac.q_loss(obs, action, reward, torch.randn(4, 2), terminated)
    target = torch.tensor([1.0 + 0.9 * 5, 1.0, -1.0 + 0.9 * 5, 0.0])
    q = ac.q(obs, action).detach()  # [2, B]
    assert float(loss) == pytest.approx(float((q - target).pow(2).mean(1).sum()), rel=1e-6)


def test_td3_target_uses_target_actor_and_twin_minimum():
    ac = learner(value="td3", extraction="ddpg_bc", gamma=0.5, policy_noise=0.0)
    with torch.no_grad():  # make the online nets differ from the targets: the target must come from the targets
        for p in list(ac.q.parameters()) + list(ac.actor.parameters()):
            p.add_(1.0)
    obs, action, next_obs = torch.randn(5, 2), torch.rand(5, 1) * 2 - 1, torch.randn(5, 2)
    reward, terminated = torch.arange(5.0), torch.tensor([False, False, True, False, True])
    loss, _ = ac.q_loss(obs, action, reward, next_obs, terminated)
    next_q = ac.q_target(next_obs, ac.actor_target(next_obs)).min(0).values
    target = reward + 0.5 * (~terminated).float() * next_q
    q = ac.q(obs, action).detach()
    assert float(loss) == pytest.approx(float((q - target).pow(2).mean(1).sum()), rel=1e-6)


def test_iql_value_and_awr_use_the_target_q_minimum():
    ac = learner(value="iql", extraction="awr", expectile=0.7)
    with torch.no_grad():
        for p in ac.q.parameters():
            p.add_(0.5)  # the online twins now differ from the Polyak target
    obs, action = torch.randn(6, 2), torch.rand(6, 1) * 2 - 1
    batch = TensorDict({"obs": obs, "action": action, "reward": torch.zeros(6), "next_obs": obs,
                        "terminated": torch.zeros(6, dtype=torch.bool)}, batch_size=[6])
    q_min = ac.q_target(obs, action).min(0).values
    v = ac.v(obs).squeeze(-1).detach()
    info = ac.update(batch)
    assert info["loss/value"] == pytest.approx(float(expectile_loss(q_min - v, 0.7)), rel=1e-5)


def test_soft_update_moves_the_target_towards_the_source():
    target, source = nn.Linear(2, 2), nn.Linear(2, 2)
    target.register_buffer("stat", torch.zeros(2))
    source.register_buffer("stat", torch.ones(2))
    with torch.no_grad():
        target.weight.fill_(0.0)
        source.weight.fill_(1.0)
    soft_update(target, source, 0.25)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.25))  # (1 - tau) * 0 + tau * 1
    assert torch.equal(source.weight, torch.ones(2, 2))  # the source is untouched
    assert torch.equal(target.stat, torch.ones(2))  # buffers are copied


def test_update_moves_q_target_by_tau():
    ac = learner(value="iql", tau=0.1)
    before = [p.clone() for p in ac.q_target.parameters()]
    obs = torch.randn(8, 2)
    ac.update(TensorDict({"obs": obs, "action": torch.zeros(8, 1), "reward": torch.ones(8), "next_obs": obs,
                          "terminated": torch.zeros(8, dtype=torch.bool)}, batch_size=[8]))
    for b, t, s in zip(before, ac.q_target.parameters(), ac.q.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)


def test_reward_scaling_divides_by_the_episode_return_spread():
    data = TensorDict({"reward": torch.tensor([1.0, 1.0, 3.0, -1.0, 0.0])}, batch_size=[5])
    store = EpisodeStore(data, torch.tensor([0, 2, 5]))  # returns 2 and 2: spread 0 -> unchanged
    assert scale_rewards(store, IQLConfig()) == {"data/reward_scale": 1.0}
    store = EpisodeStore(data.clone(), torch.tensor([0, 3, 5]))  # returns 5 and -1: spread 6
    info = scale_rewards(store, IQLConfig())
    assert info["data/reward_scale"] == pytest.approx(1000 / 6)
    torch.testing.assert_close(store.data["reward"], data["reward"] * 1000 / 6)
    assert scale_rewards(store, IQLConfig(normalize_reward=False)) == {}
