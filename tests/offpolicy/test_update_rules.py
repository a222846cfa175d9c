"""SAC and TD3 update rules on small hand-checked cases: the action scaling, the squashed
Gaussian's log std range and exact log-density, the temperature loss and its schedule, the
metrics each update reports, and TD3's acting noise and first-critic actor loss."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.sac import SAC, BoxScaler, SACConfig, transitions
from rlx.algos.td3 import TD3, TD3Config

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(n, generator=g) < 0.5
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    return TensorDict({"obs": torch.randn(n, 3, generator=g), "action": low + (high - low) * torch.rand(n, 2, generator=g),
                       "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 3, generator=g),
                       "terminated": term, "truncated": ~term}, batch_size=[n])


class Const(nn.Module):
    """A network whose output is a fixed row for every input."""

    def __init__(self, row):
        super().__init__()
        self.row = nn.Parameter(torch.tensor(row))

    def forward(self, x):
        return self.row.expand(x.shape[0], -1)


@pytest.mark.parametrize("learner", [lambda: SAC(SACConfig(hidden=[8]), OBS, ACT), lambda: TD3(TD3Config(hidden=[8]), OBS, ACT)])
def test_actions_map_affinely_between_the_box_and_the_unit_cube(learner):
    scale = learner().scale
    env = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 0.25], [1.0, 0.75], [5.0, -3.0]])
    unit = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, -0.5], [0.5, 0.5], [1.0, -1.0]])  # the last row clamped
    torch.testing.assert_close(scale.to_unit(env), unit)
    torch.testing.assert_close(scale.to_env(unit[:4]), env[:4])


def test_squashed_gaussian_log_std_range_and_exact_log_density():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8]), OBS, gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
    # raw log std 0 -> the middle of [-5, 2]; +-50 -> the ends
    sac.actor.net = Const([0.3, -0.4, 1.2, 0.0, 50.0, -50.0])
    mean, log_std = sac.actor(torch.zeros(4, 3))
    torch.testing.assert_close(mean[0], torch.tensor([0.3, -0.4, 1.2]))
    torch.testing.assert_close(log_std[0], torch.tensor([-1.5, 2.0, -5.0]))
    torch.manual_seed(5)
    a, logp = sac.actor.sample(torch.zeros(4, 3))
    torch.manual_seed(5)
    eps = torch.randn(4, 3).double()
    m, s = mean.detach().double(), log_std.detach().double().exp()
    u = m + s * eps
    expected = (torch.distributions.Normal(m, s).log_prob(u) - torch.log1p(-torch.tanh(u) ** 2)).sum(-1)
    torch.testing.assert_close(a.double(), torch.tanh(u), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logp.double(), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sac.act(torch.zeros(1, 3), deterministic=True)["action"], torch.tanh(mean[:1]))


def test_sac_temperature_loss_hand_computed_and_target_entropy_setting():
    sac = SAC(SACConfig(hidden=[8], target_entropy=-0.5), OBS, ACT)
    assert sac.target_entropy == -0.5
    with torch.no_grad():
        sac.log_alpha.fill_(0.3)
    # -(log alpha (log pi + target)) averaged: -(0.3 (0.5 + 1.5)) / 2
    assert float(sac.alpha_loss(torch.tensor([1.0, 2.0])).detach()) == pytest.approx(-0.3)
    fixed = SAC(SACConfig(hidden=[8], autotune=False, alpha=0.05, policy_frequency=1), OBS, ACT)
    assert float(fixed.log_alpha.detach()) == pytest.approx(math.log(0.05))
    for seed in range(3):
        metrics = fixed.update(_batch(seed=seed))
        assert metrics["train/alpha"] == pytest.approx(0.05)
    assert float(fixed.log_alpha.detach()) == pytest.approx(math.log(0.05))  # no temperature step without autotune


def test_sac_update_steps_actor_and_temperature_policy_frequency_times_with_the_new_alpha():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8], policy_frequency=3, q_lr=0.1), OBS, ACT)
    calls = []
    real = sac.actor_loss

    def actor_loss(obs, alpha):
        calls.append((float(alpha), float(sac.log_alpha.detach().exp())))
        return real(obs, alpha)

    sac.actor_loss = actor_loss
    b = _batch()
    for step in range(2):
        metrics = sac.update(b)
        assert calls == [] and "loss/actor" not in metrics and metrics["train/alpha"] == pytest.approx(1.0)
    torch.manual_seed(7)
    obs, nobs = b["obs"], b["next_obs"]
    expected_q, _ = sac.critic_loss(obs, sac.scale.to_unit(b["action"]), b["reward"], nobs, b["terminated"],
                                    torch.tensor(1.0))
    torch.manual_seed(7)
    metrics = sac.update(b)
    assert metrics["loss/q"] == pytest.approx(float(expected_q), rel=1e-5)
    assert len(calls) == 3 and calls[0][0] == pytest.approx(1.0) and sac.steps == 3
    for used, current in calls:  # each actor step uses the temperature after the previous temperature step
        assert used == pytest.approx(current)
    assert calls[1][0] != pytest.approx(1.0)
    assert {"loss/actor", "train/entropy", "train/q_mean"} <= set(metrics)


def test_sac_reports_the_entropy_of_the_last_actor_step():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8], policy_frequency=1, autotune=False), OBS, ACT)
    seen = []
    real = sac.actor_loss

    def actor_loss(obs, alpha):
        loss, logp = real(obs, alpha)
        seen.append((float(loss), float(-logp.mean())))
        return loss, logp

    sac.actor_loss = actor_loss
    metrics = sac.update(_batch())
    assert metrics["loss/actor"] == pytest.approx(seen[-1][0]) and metrics["train/entropy"] == pytest.approx(seen[-1][1])


def test_td3_acting_noise_is_clipped_to_the_box_and_absent_when_deterministic():
    torch.manual_seed(0)
    obs = torch.randn(512, 3)
    quiet = TD3(TD3Config(hidden=[8], exploration_noise=0.0), OBS, ACT)
    mu = quiet.scale.to_env(quiet.actor(obs))
    torch.testing.assert_close(quiet.act(obs)["action"], mu)
    torch.testing.assert_close(quiet.act(obs, deterministic=True)["action"], mu)
    loud = TD3(TD3Config(hidden=[8], exploration_noise=0.3), OBS, ACT)
    loud.actor = quiet.actor
    torch.manual_seed(1)
    a = loud.act(obs)["action"]
    torch.manual_seed(1)
    unit = (quiet.actor(obs) + 0.3 * torch.randn(512, 2)).clamp(-1, 1)
    torch.testing.assert_close(a, quiet.scale.to_env(unit))
    assert float(loud.act(obs, deterministic=True)["action"].sub(mu).abs().max()) == 0.0


def test_td3_actor_loss_is_minus_the_first_critic_at_mu():
    torch.manual_seed(0)
    td3 = TD3(TD3Config(hidden=[8]), OBS, ACT)
    obs = torch.randn(16, 3)
    q = td3.q(obs, td3.actor(obs))  # [2, B]
    assert (q[0] - q[1]).abs().mean() > 1e-3  # the twins differ, so Q_1, min and mean differ
    torch.testing.assert_close(td3.actor_loss(obs), -q[0].mean())


def test_td3_critic_target_discounts_and_masks_row_by_row():
    torch.manual_seed(0)
    td3 = TD3(TD3Config(hidden=[8], policy_noise=0.0, gamma=0.5), OBS, ACT)
    b = _batch()
    assert b["terminated"].any() and (~b["terminated"]).any()
    a = td3.scale.to_unit(b["action"])
    loss, q = td3.critic_loss(b["obs"], a, b["reward"], b["next_obs"], b["terminated"])
    next_v = td3.q_target(b["next_obs"], td3.actor_target(b["next_obs"])).min(0).values
    target = b["reward"] + 0.5 * (~b["terminated"]).float() * next_v
    torch.testing.assert_close(loss, ((q - target) ** 2).mean(1).sum())
    torch.testing.assert_close(q, td3.q(b["obs"], a))


def test_td3_update_reports_the_pre_step_critic_loss_and_the_delayed_actor_loss():
    torch.manual_seed(0)
    td3 = TD3(TD3Config(hidden=[8], policy_delay=2, policy_noise=0.0), OBS, ACT)
    b = _batch()
    a = td3.scale.to_unit(b["action"])
    loss, q = td3.critic_loss(b["obs"], a, b["reward"], b["next_obs"], b["terminated"])
    metrics = td3.update(b)
    assert metrics["loss/q"] == pytest.approx(float(loss)) and metrics["train/q_mean"] == pytest.approx(float(q.mean()))
    assert "loss/actor" not in metrics
    metrics = td3.update(b)
    assert "loss/actor" in metrics and td3.steps == 2
    assert all(p.requires_grad for p in td3.q.parameters())


@pytest.mark.parametrize("noise,clip", [(0.1, 0.5), (2.0, 1.9)])
def test_td3_target_action_is_the_clipped_smoothed_target_mu(noise, clip):
    torch.manual_seed(0)
    td3 = TD3(TD3Config(hidden=[8], policy_noise=noise, noise_clip=clip), OBS, ACT)
    with torch.no_grad():  # the target actor differs from the online one
        for p in td3.actor_target.parameters():
            p.add_(0.3)
    seen = []
    real = td3.q_target.forward
    td3.q_target.forward = lambda o, a: (seen.append(a.detach()), real(o, a))[1]
    b = _batch(64)
    torch.manual_seed(3)
    td3.critic_loss(b["obs"], td3.scale.to_unit(b["action"]), b["reward"], b["next_obs"], b["terminated"])
    mu = td3.actor_target(b["next_obs"]).detach()
    torch.manual_seed(3)
    eps = (noise * torch.randn(64, 2)).clamp(-clip, clip)
    torch.testing.assert_close(seen[0], (mu + eps).clamp(-1, 1))
    if noise == 2.0:  # both bounds of the action box are reached
        assert (seen[0] == 1).any() and (seen[0] == -1).any()


def test_update_casts_float64_and_integer_batches():
    torch.manual_seed(0)
    for learner in (SAC(SACConfig(hidden=[8], policy_frequency=1), OBS, ACT), TD3(TD3Config(hidden=[8], policy_delay=1), OBS, ACT)):
        b = _batch()
        b64 = TensorDict({k: (v.double() if v.is_floating_point() else v.long()) for k, v in b.items()}, batch_size=[8])
        metrics = learner.update(b64)
        assert {"loss/q", "loss/actor"} <= set(metrics)


def test_a_float64_action_box_still_gives_float32_actions_and_updates():
    box = gym.spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 1.0]), dtype=np.float64)
    torch.manual_seed(0)
    for learner in (SAC(SACConfig(hidden=[8], policy_frequency=1), OBS, box), TD3(TD3Config(hidden=[8], policy_delay=1), OBS, box)):
        assert learner.act(torch.zeros(2, 3))["action"].dtype == torch.float32
        assert learner.scale.to_unit(torch.tensor([[0.0, 0.5]])).dtype == torch.float32
        assert "loss/actor" in learner.update(_batch())


def test_transitions_are_float32_rows_whatever_the_batch_dtypes():
    """The rows SAC's and TD3's updates read: observations flattened to [B, obs_dim] float32, the
    action mapped to [-1, 1], reward [B] float32 from float64 or integer rewards (a float64
    reward would make the critic target and loss float64), terminated [B] as stored."""
    scale = BoxScaler(ACT, torch.device("cpu"))
    b = _batch(4)
    for reward in (b["reward"].double(), torch.tensor([3, -1, 0, 2])):
        batch = TensorDict({"obs": b["obs"].double().reshape(4, 3, 1), "action": b["action"].double(),
                            "reward": reward.reshape(4, 1), "next_obs": b["next_obs"].double().reshape(4, 1, 3),
                            "terminated": b["terminated"].reshape(4, 1)}, batch_size=[4])
        obs, action, r, next_obs, term = transitions(batch, torch.device("cpu"), scale)
        assert [t.dtype for t in (obs, action, r, next_obs)] == [torch.float32] * 4 and term.dtype == torch.bool
        assert obs.shape == next_obs.shape == (4, 3) and r.shape == term.shape == (4,)
        assert torch.equal(obs, b["obs"]) and torch.equal(next_obs, b["next_obs"]) and torch.equal(term, b["terminated"])
        assert torch.equal(r, reward.float())
        low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
        torch.testing.assert_close(action, 2 * (b["action"] - low) / (high - low) - 1)
