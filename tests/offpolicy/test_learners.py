"""SAC and TD3: targets, signs, schedules, and small learning checks."""


import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.sac import SAC, SACConfig, soft_q_target
from rlx.algos.td3 import TD3, TD3Config
from rlx.core.loops import TrainerConfig, evaluate_policy, seed_everything
from rlx.core.offpolicy import OffPolicyLoop

from .conftest import point_env

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


def _batch(n=8, terminated=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(n, dtype=torch.bool) if terminated is None else terminated
    return TensorDict({"obs": torch.randn(n, 3, generator=g), "action": 4 * torch.rand(n, 2, generator=g) - 2,
                       "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 3, generator=g),
                       "terminated": term, "truncated": ~term}, batch_size=[n])


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_soft_q_target_bootstraps_truncation_not_termination():
    r, v = torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0])
    out = soft_q_target(r, torch.tensor([True, False]), v, 0.9)
    assert torch.allclose(out, torch.tensor([1.0, 10.0]))  # terminated: r only; truncated (not terminated): r + g V


@pytest.mark.parametrize("terminated", [True, False])
def test_sac_critic_target_has_minus_alpha_logp_and_respects_termination(terminated):
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8]), OBS, ACT)
    b = _batch(terminated=torch.full((8,), terminated))
    obs, nobs, a = b["obs"], b["next_obs"], sac.scale.to_unit(b["action"])
    alpha = torch.tensor(0.7)
    torch.manual_seed(1)
    loss, q = sac.critic_loss(obs, a, b["reward"], nobs, b["terminated"], alpha)
    torch.manual_seed(1)  # the same next-action draw
    na, nlogp = sac.actor.sample(nobs)
    next_v = sac.q_target(nobs, na).min(0).values - alpha * nlogp
    target = b["reward"] + (0.0 if terminated else 0.99) * next_v
    assert torch.allclose(loss, ((q - target) ** 2).mean(1).sum())


def test_sac_actor_loss_sign_and_alpha_loss_direction():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8]), OBS, ACT)
    obs = torch.randn(16, 3)
    torch.manual_seed(2)
    loss, logp = sac.actor_loss(obs, torch.tensor(0.5))
    torch.manual_seed(2)
    a, logp2 = sac.actor.sample(obs)
    assert torch.allclose(loss, (0.5 * logp2 - sac.q(obs, a).min(0).values).mean())  # + alpha log pi - Q
    # alpha grows when the policy's entropy (-log pi) is below the target, shrinks above it
    for logp, direction in ((torch.full((16,), 5.0), 1), (torch.full((16,), -5.0), -1)):
        before = float(sac.log_alpha.detach())
        sac.alpha_opt.zero_grad()
        sac.alpha_loss(logp).backward()
        sac.alpha_opt.step()
        assert direction * (float(sac.log_alpha.detach()) - before) > 0
    assert sac.target_entropy == -2.0


def test_squashed_logp_matches_change_of_variables():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8]), OBS, ACT)
    obs = torch.randn(5, 3)
    torch.manual_seed(3)
    a, logp = sac.actor.sample(obs)
    mean, log_std = sac.actor(obs)
    u = torch.atanh(a.double())
    base = torch.distributions.Normal(mean.double(), log_std.exp().double()).log_prob(u).sum(-1)
    assert torch.allclose(logp.double(), base - torch.log(1 - a.double() ** 2).sum(-1), atol=1e-3)


def test_sac_polyak_direction_and_policy_frequency():
    torch.manual_seed(0)
    sac = SAC(SACConfig(hidden=[8], tau=0.1, policy_frequency=2), OBS, ACT)
    actor0, target0 = _params(sac.actor), _params(sac.q_target)
    sac.update(_batch())
    q1 = _params(sac.q)
    for t, t0, q in zip(sac.q_target.parameters(), target0, q1):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * q, atol=1e-6)  # target moves 10% toward the online critic
    assert all(torch.equal(p, p0) for p, p0 in zip(sac.actor.parameters(), actor0))  # no actor step yet
    alpha0 = float(sac.log_alpha.detach())
    sac.update(_batch(seed=1))
    assert not any(torch.equal(p, p0) for p, p0 in zip(sac.actor.parameters(), actor0))
    assert float(sac.log_alpha.detach()) != alpha0
    assert all(p.requires_grad for p in sac.q.parameters())


def test_td3_delay_smoothing_and_targets():
    torch.manual_seed(0)
    cfg = TD3Config(hidden=[8], tau=0.1, policy_delay=2, policy_noise=10.0, noise_clip=0.3)
    td3 = TD3(cfg, OBS, ACT)
    seen = []
    real = td3.q_target.forward
    td3.q_target.forward = lambda o, a: (seen.append(a.detach()), real(o, a))[1]
    actor0, atarget0, qtarget0 = _params(td3.actor), _params(td3.actor_target), _params(td3.q_target)
    b = _batch()
    td3.update(b)
    mu = td3.actor_target(b["next_obs"])
    assert ((seen[0] - mu).abs() <= 0.3 + 1e-6).all() and (seen[0].abs() <= 1).all()  # clipped smoothing noise
    assert ((seen[0] - mu).abs() > 0.29).float().mean() > 0.5  # std 10: almost all at the clip
    for now, before in ((td3.actor, actor0), (td3.actor_target, atarget0), (td3.q_target, qtarget0)):
        assert all(torch.equal(p, p0) for p, p0 in zip(now.parameters(), before))  # delayed: nothing moved
    td3.update(_batch(seed=1))
    q_online = _params(td3.q)
    assert not any(torch.equal(p, p0) for p, p0 in zip(td3.actor.parameters(), actor0))
    for t, t0, q in zip(td3.q_target.parameters(), qtarget0, q_online):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * q, atol=1e-6)
    for t, t0, a in zip(td3.actor_target.parameters(), atarget0, td3.actor.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * a, atol=1e-6)


def test_td3_critic_target_respects_termination():
    torch.manual_seed(0)
    td3 = TD3(TD3Config(hidden=[8], policy_noise=0.0), OBS, ACT)
    b = _batch(terminated=torch.ones(8, dtype=torch.bool))
    a = td3.scale.to_unit(b["action"])
    loss, q = td3.critic_loss(b["obs"], a, b["reward"], b["next_obs"], b["terminated"])
    assert torch.allclose(loss, ((q - b["reward"]) ** 2).mean(1).sum())


def test_actions_stay_in_the_env_bounds():
    for learner in (SAC(SACConfig(hidden=[8]), OBS, ACT), TD3(TD3Config(hidden=[8], exploration_noise=5.0), OBS, ACT)):
        a = learner.act(10 * torch.randn(256, 3))["action"]
        assert (a >= -2).all() and (a <= 2).all() and a.abs().max() > 1.0  # env scale, not [-1, 1]


def _learn(learner_cls, cfg, steps):
    seed_everything(0)
    envs = gym.vector.SyncVectorEnv([point_env], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    learner = learner_cls(cfg, envs.single_observation_space, envs.single_action_space)
    trainer = TrainerConfig(total_steps=steps, eval_every=0, progress=False, tensorboard=False)
    loop = OffPolicyLoop(learner, envs, trainer, 10_000, cfg.batch_size, cfg.learning_starts, 1.0, 500, seed=0)
    loop.run()
    return evaluate_policy(lambda o: learner.act(o, deterministic=True)["action"], point_env, 10, seed=7)


@pytest.mark.parametrize("learner_cls,cfg", [
    (SAC, SACConfig(hidden=[32, 32], batch_size=64, learning_starts=200, gamma=0.9)),
    (TD3, TD3Config(hidden=[32, 32], batch_size=64, learning_starts=200, gamma=0.9)),
])
def test_learns_point_env(learner_cls, cfg):
    random_return = evaluate_policy(lambda o: 2 * torch.rand(o.shape[0], 1) - 1, point_env, 10, seed=7)
    out = _learn(learner_cls, cfg, 1500)
    assert random_return["eval/return_mean"] < -7.0
    assert out["eval/return_mean"] > -3.5, out


@pytest.mark.slow
def test_sac_solves_pendulum():
    seed_everything(0)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    cfg = SACConfig(learning_starts=1000)
    learner = SAC(cfg, envs.single_observation_space, envs.single_action_space)
    trainer = TrainerConfig(total_steps=8000, eval_every=0, progress=False, tensorboard=False)
    OffPolicyLoop(learner, envs, trainer, cfg.buffer_size, cfg.batch_size, cfg.learning_starts, 1.0, seed=0).run()
    out = evaluate_policy(lambda o: learner.act(o, deterministic=True)["action"], lambda: gym.make("Pendulum-v1"), 10,
                          seed=10_000)
    assert out["eval/return_mean"] > -400, out
