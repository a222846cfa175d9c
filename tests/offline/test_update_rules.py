"""The offline actor-critic's update on small hand-checked cases: observation and action
scaling, which networks each extraction reads (twin mean, Q_1, V), the TD3 policy delay and
its targets, the critic step on Q and V together, the cosine actor schedule, and the metrics."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.offline_ac import (IQLConfig, OfflineActorCritic, awr_weights, ddpg_bc_loss, expectile_loss,
                                  td3bc_actor_loss)

OBS = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
ACT = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def learner(total_steps=None, **kw) -> OfflineActorCritic:
    torch.manual_seed(0)
    cfg = IQLConfig(**{"hidden": [8], "normalize_obs": False, "actor_cosine_decay": False, **kw})
    return OfflineActorCritic(cfg, OBS, ACT, total_steps)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    return TensorDict({"obs": torch.randn(n, 2, generator=g), "action": low + (high - low) * torch.rand(n, 2, generator=g),
                       "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 2, generator=g),
                       "terminated": torch.rand(n, generator=g) < 0.3}, batch_size=[n])


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(module, before):
    return all(torch.equal(p, b) for p, b in zip(module.parameters(), before))


def test_observation_normalizer_from_the_dataset_and_action_scaling():
    ac = learner(normalize_obs=True)
    obs = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])  # mean (3, 5), std (2, 0 -> 1e-3)
    ac.set_dataset_stats(obs)
    torch.testing.assert_close(ac.norm_obs(torch.tensor([[5.0, 5.002]])), torch.tensor([[1.0, 2.0]]), atol=1e-3, rtol=0)
    off = learner(normalize_obs=False)
    off.set_dataset_stats(obs)
    torch.testing.assert_close(off.norm_obs(obs.double()), obs)  # unchanged, float32
    env = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [1.0, 0.25], [9.0, -4.0]])
    unit = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.5, -0.5], [1.0, -1.0]])  # the last row clamped
    torch.testing.assert_close(ac.to_unit(env), unit)
    torch.testing.assert_close(ac.to_env(unit[:3]), env[:3])
    out = ac.act(obs, deterministic=True)["action"]
    torch.testing.assert_close(out, ac.to_env(ac.actor(ac.norm_obs(obs))))
    wide = learner()
    with torch.no_grad():
        wide.actor.log_std.fill_(2.0)
    a = wide.act(torch.zeros(256, 2))["action"]
    assert (a[:, 0] >= -2).all() and (a[:, 0] <= 2).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 1).all()
    assert (a[:, 0] == 2).any() and (a[:, 0] == -2).any()  # draws clipped at both ends of the box


def test_q_value_is_the_twin_mean_and_ddpg_bc_reads_it():
    ac = learner(value="iql", extraction="ddpg_bc", bc_alpha=0.4)
    obs, action = torch.randn(6, 2), torch.rand(6, 2) * 2 - 1
    q = ac.q(obs, action)
    assert (q[0] - q[1]).abs().mean() > 1e-3
    torch.testing.assert_close(ac.q_value(obs, action), q.mean(0))
    loss, info = ac.actor_loss(obs, action, None)
    mu = ac.actor(obs)
    expected, bc = ddpg_bc_loss(ac.q(obs, mu).mean(0), mu, action, 0.4)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(info["train/bc_mse"], bc)


def test_td3bc_reads_the_first_twin_only():
    ac = learner(value="td3", extraction="td3bc", td3bc_alpha=2.5)
    obs, action = torch.randn(6, 2), torch.rand(6, 2) * 2 - 1
    mu = ac.actor(obs)
    q = ac.q(obs, mu)
    assert (q[0] - q[1]).abs().mean() > 1e-3
    loss, _ = ac.actor_loss(obs, action, None)
    torch.testing.assert_close(loss, td3bc_actor_loss(q[0], mu, action, 2.5)[0])


def test_bc_extraction_is_the_negative_log_likelihood():
    ac = learner(value="none", extraction="bc")
    obs, action = torch.randn(5, 2), torch.rand(5, 2) * 2 - 1
    loss, info = ac.actor_loss(obs, action, None)
    torch.testing.assert_close(loss, -ac.actor.dist(obs).log_prob(action).mean())
    assert info == {}
    b = batch()
    expected = ac.actor_loss(ac.norm_obs(b["obs"]), ac.to_unit(b["action"]), None)[0].detach()
    before = params(ac.actor)
    metrics = ac.update(b)
    assert set(metrics) == {"loss/actor"} and not same(ac.actor, before)
    assert metrics["loss/actor"] == pytest.approx(float(expected), rel=1e-5)


def test_iql_update_steps_q_and_v_together_and_reports_each_loss():
    ac = learner(value="iql", extraction="awr", gamma=0.8, expectile=0.7, awr_alpha=1.5, tau=0.2)
    b = batch()
    obs, action = b["obs"], ac.to_unit(b["action"])
    q_min = ac.q_target(obs, action).min(0).values
    v = ac.v(obs).squeeze(-1).detach()
    next_v = ac.v(b["next_obs"]).squeeze(-1).detach()
    target = b["reward"] + 0.8 * (~b["terminated"]).float() * next_v
    q_now = ac.q(obs, action).detach()
    q_loss = (q_now - target).pow(2).mean(1).sum()
    q0, v0, t0 = params(ac.q), params(ac.v), params(ac.q_target)
    metrics = ac.update(b)
    assert metrics["loss/q"] == pytest.approx(float(q_loss), rel=1e-5)
    assert metrics["loss/value"] == pytest.approx(float(expectile_loss(q_min - v, 0.7)), rel=1e-5)
    assert metrics["train/v_mean"] == pytest.approx(float(v.mean()), rel=1e-5)
    assert metrics["train/q_mean"] == pytest.approx(float(q_now.mean()), rel=1e-5)
    assert not same(ac.q, q0) and not same(ac.v, v0)  # one critic step moves both
    # AWR reads the V just updated
    adv = q_min - ac.v(obs).squeeze(-1).detach()
    assert metrics["train/adv_mean"] == pytest.approx(float(adv.mean()), rel=1e-4, abs=1e-6)
    assert metrics["train/awr_weight_mean"] == pytest.approx(float(awr_weights(adv, 1.5, 100.0).mean()), rel=1e-4)
    for t, old, q in zip(ac.q_target.parameters(), t0, ac.q.parameters()):
        torch.testing.assert_close(t, 0.8 * old + 0.2 * q)


def test_sarsa_is_the_median_expectile():
    assert learner(value="sarsa", expectile=0.9).expectile == 0.5
    assert learner(value="iql", expectile=0.9).expectile == 0.9


def test_td3_value_delays_the_actor_and_every_target():
    ac = learner(value="td3", extraction="td3bc", policy_delay=3, tau=0.5, policy_noise=0.0)
    a0, at0, qt0 = params(ac.actor), params(ac.actor_target), params(ac.q_target)
    for step in range(2):
        metrics = ac.update(batch(seed=step))
        assert "loss/actor" not in metrics and "loss/value" not in metrics and "loss/q" in metrics
        assert same(ac.actor, a0) and same(ac.actor_target, at0) and same(ac.q_target, qt0)
    metrics = ac.update(batch(seed=2))
    assert "loss/actor" in metrics and "train/bc_mse" in metrics and ac.steps == 3
    for t, old, s in zip(ac.actor_target.parameters(), at0, ac.actor.parameters()):
        torch.testing.assert_close(t, 0.5 * old + 0.5 * s)
    for t, old, s in zip(ac.q_target.parameters(), qt0, ac.q.parameters()):
        torch.testing.assert_close(t, 0.5 * old + 0.5 * s)


@pytest.mark.parametrize("noise,clip", [(0.3, 0.4), (2.0, 1.5)])
def test_td3_smoothing_noise_is_clipped_around_the_target_action(noise, clip):
    ac = learner(value="td3", extraction="td3bc", policy_noise=noise, noise_clip=clip, gamma=0.9)
    seen = []
    real = ac.q_target.forward
    ac.q_target.forward = lambda o, a: (seen.append(a.detach()), real(o, a))[1]
    b = batch(64)
    obs, action = b["obs"], ac.to_unit(b["action"])
    torch.manual_seed(4)
    loss, _ = ac.q_loss(obs, action, b["reward"], b["next_obs"], b["terminated"])
    torch.manual_seed(4)
    eps = (noise * torch.randn(64, 2)).clamp(-clip, clip)
    assert (eps == clip).any() and (eps == -clip).any()  # the noise clip binds on both sides
    expected_a = (ac.actor_target(b["next_obs"]).detach() + eps).clamp(-1, 1)
    torch.testing.assert_close(seen[0], expected_a)
    if noise == 2.0:  # and the action box on both sides
        assert (expected_a == 1).any() and (expected_a == -1).any()
    target = b["reward"] + 0.9 * (~b["terminated"]).float() * real(b["next_obs"], expected_a).min(0).values
    torch.testing.assert_close(loss, (ac.q(obs, action).detach() - target).pow(2).mean(1).sum())


def test_actor_learning_rate_follows_the_cosine_schedule():
    ac = learner(total_steps=4, value="iql", extraction="awr", actor_cosine_decay=True, actor_lr=0.01, critic_lr=0.02)
    lrs = []
    for step in range(3):
        ac.update(batch(seed=step))
        lrs.append(ac.actor_opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * k / 4)) / 2 for k in (1, 2, 3)])
    assert ac.critic_opt.param_groups[0]["lr"] == pytest.approx(0.02)  # the critics keep theirs
    flat = learner(total_steps=4, actor_cosine_decay=False, actor_lr=0.01)
    flat.update(batch())
    assert flat.actor_opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_the_policy_log_std_is_kept_in_minus_5_to_2():
    ac = learner(value="none", extraction="bc")
    obs = torch.zeros(1, 2)
    for raw, used in ((5.0, 2.0), (-9.0, -5.0), (0.5, 0.5)):
        with torch.no_grad():
            ac.actor.log_std.fill_(raw)
        dist = ac.actor.dist(obs)
        torch.testing.assert_close(dist.std, torch.full((1, 2), math.exp(used)))


def test_expectile_weight_follows_the_sign_argument_and_the_zero_boundary():
    # without sign: tau above 0 (u = 0.5 is above), 1 - tau below
    assert float(expectile_loss(torch.tensor([0.5]), 0.7)) == pytest.approx(0.7 * 0.25)
    # with sign: the weight follows sign's sign (HILP's target advantage), u only sets the size; sign 0 is "above"
    out = expectile_loss(torch.tensor([2.0, -1.0, 1.0]), 0.7, sign=torch.tensor([-1.0, 1.0, 0.0]))
    assert float(out) == pytest.approx((0.3 * 4 + 0.7 * 1 + 0.7 * 1) / 3)  # u's own signs would give (2.8 + 0.3 + 0.7) / 3


def test_ddpg_bc_loss_value_and_a_small_q_scale():
    q = torch.tensor([0.5, 0.25])  # mean |Q| = 0.375 < 1: lambda = 1 / 0.375
    mu, data = torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    loss, bc = ddpg_bc_loss(q, mu, data, alpha=0.4)
    assert float(bc) == pytest.approx((1.0 + 2.0) / 2)  # squared error summed over action dims, batch mean
    assert float(loss) == pytest.approx(-(0.375 / 0.375) + 0.4 * 1.5)


def test_iql_critic_step_lowers_the_value_loss():
    ac = learner(value="iql", extraction="awr", expectile=0.7, critic_lr=1e-2)
    b = batch(64)
    obs, action = b["obs"], ac.to_unit(b["action"])
    q_min = ac.q_target(obs, action).min(0).values.detach()
    before = float(expectile_loss(q_min - ac.v(obs).squeeze(-1), 0.7).detach())
    ac.update(b)
    after = float(expectile_loss(q_min - ac.v(obs).squeeze(-1), 0.7).detach())
    assert after < before  # V descends its own loss in the joint critic step


def test_reward_scaling_threshold_is_on_the_return_spread():
    from rlx.algos.offline_ac import scale_rewards
    from rlx.core.buffers import EpisodeStore

    cfg = IQLConfig()
    for spread, scale in ((0.5, 1000 / 0.5), (1.0, 1000.0), (1e-8, 1.0), (1e-9, 1.0)):
        data = TensorDict({"reward": torch.tensor([spread, 0.0], dtype=torch.float64)}, batch_size=[2])
        info = scale_rewards(EpisodeStore(data, torch.tensor([0, 1, 2])), cfg)
        assert info["data/reward_scale"] == pytest.approx(scale)


def test_to_unit_returns_float32_for_float64_actions():
    ac = learner()
    assert ac.to_unit(torch.tensor([[0.0, 0.5]], dtype=torch.float64)).dtype == torch.float32
