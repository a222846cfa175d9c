"""HILP's update and prompting on small hand-checked cases: the skill policy's batch (latent-
augmented observations, intrinsic rewards <f(s, s'), z>, no terminations), the phi step and its
Polyak target, the random-phi baseline, goal prompting and the unit-sphere latents."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.hilp import HILP, HILPConfig, unit_sphere
from tests.hilp.test_hilp import ACT, OBS, small_cfg


def make(**kw):
    torch.manual_seed(0)
    learner = HILP(small_cfg(**kw), OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3) * 2 + 1)
    return learner


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"obs": torch.randn(n, 3, generator=g), "next_obs": torch.randn(n, 3, generator=g),
                       "goal": torch.randn(n, 3, generator=g), "action": torch.rand(n, 2, generator=g) * 2 - 1,
                       "reward": -torch.ones(n), "terminated": torch.rand(n, generator=g) < 0.3}, batch_size=[n])


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_unit_sphere_latents():
    z = unit_sphere(500, 4, torch.Generator().manual_seed(0))
    assert z.shape == (500, 4)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(500))
    assert z.mean(0).abs().max() < 0.1  # symmetric, not one orthant
    assert unit_sphere(3, 2, torch.Generator().manual_seed(1)).dtype == torch.float32


def test_update_trains_phi_then_feeds_the_skill_policy_intrinsic_rewards():
    learner = make(tau=0.25)
    b = batch()
    n = learner._norm
    expected_phi_loss, _ = learner.phi_loss(n(b["obs"]), n(b["next_obs"]), n(b["goal"]), b["reward"], b["terminated"])
    phi0, target0 = params(learner.phi), params(learner.phi_target)
    seen = []
    real = learner.policy.update
    learner.policy.update = lambda skill: (seen.append(skill.clone()), real(skill))[1]
    info = learner.update(b)
    assert info["loss/phi"] == pytest.approx(float(expected_phi_loss.detach()), rel=1e-5)
    assert not all(torch.equal(p, q) for p, q in zip(learner.phi.parameters(), phi0))
    for t, old, p in zip(learner.phi_target.parameters(), target0, learner.phi.parameters()):
        torch.testing.assert_close(t, 0.75 * old + 0.25 * p)
    (skill,) = seen
    z = skill["obs"][:, 3:]
    torch.testing.assert_close(skill["obs"][:, :3], b["obs"])
    torch.testing.assert_close(skill["next_obs"], torch.cat([b["next_obs"], z], -1))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(16))
    assert z.std(0).min() > 0.1  # a fresh latent per row
    # the intrinsic reward uses the phi just updated: <phi(s') - phi(s), z>
    reward = ((learner.embed(b["next_obs"]) - learner.embed(b["obs"])) * z).sum(-1).detach()
    torch.testing.assert_close(skill["reward"], reward)
    assert not skill["terminated"].any() and torch.equal(skill["action"], b["action"])
    assert info["train/intrinsic_reward_mean"] == pytest.approx(float(reward.mean()), rel=1e-5, abs=1e-7)
    assert "loss/actor" in info and "loss/q" in info  # the skill policy's own update ran


def test_random_phi_is_never_trained():
    learner = make(phi="random")
    phi0, target0 = params(learner.phi), params(learner.phi_target)
    info = learner.update(batch())
    assert "loss/phi" not in info and "train/intrinsic_reward_mean" in info
    assert all(torch.equal(p, q) for p, q in zip(learner.phi.parameters(), phi0))
    assert all(torch.equal(p, q) for p, q in zip(learner.phi_target.parameters(), target0))


def test_intrinsic_reward_and_goal_prompt_hand_computed():
    learner = HILP(HILPConfig(hidden=[8], latent_dim=2), gym.spaces.Box(-10, 10, (2,), np.float32), ACT)
    learner.embed = lambda x: x.float()  # identity phi
    s, s2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[4.0, 5.0], [0.0, -2.0]])
    z = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # f = s' - s = (3, 4) and (0, -2)
    torch.testing.assert_close(learner.intrinsic_reward(s, s2, z), torch.tensor([0.6 * 3 + 0.8 * 4, 0.0]))
    torch.testing.assert_close(learner.goal_latent(s, s2), torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    same = learner.goal_latent(s, s)  # a goal at the state: the zero direction, not nan
    assert torch.equal(same, torch.zeros(2, 2))


def test_phi_value_is_minus_the_distance_with_a_floor():
    learner = HILP(HILPConfig(hidden=[8], latent_dim=2), gym.spaces.Box(-10, 10, (2,), np.float32), ACT)
    learner.phi.forward = lambda x: torch.stack([2 * x, 2 * x])  # both members phi(x) = 2x: [E, B, d]
    v = learner.phi.value(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.5, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(v, torch.tensor([[-5.0, -1e-3], [-5.0, -1e-3]]))  # -||2(s - g)||, floor sqrt(1e-6)


def test_reward_fit_r2_hand_computed_and_the_phi_metrics():
    from rlx.algos.hilp import reward_fit_r2

    f = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    held = torch.tensor([[0.0], [1.0], [2.0]])
    # fit r = 2 f + 5 exactly; held rewards 5, 8, 9 against predictions 5, 7, 9: SSE/n = 1/3, variance 26/9
    r2 = reward_fit_r2(f, 2 * f[:, 0] + 5, held, torch.tensor([5.0, 8.0, 9.0]))
    assert r2 == pytest.approx(1 - (1 / 3) / (26 / 9))
    learner = make()
    b = batch()
    info = learner.update(b)
    assert {"loss/phi", "train/phi_v_mean", "train/phi_adv_mean"} <= set(info)
