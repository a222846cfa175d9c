"""PPO's full loss on a hand-checked minibatch: per-minibatch advantage normalization, the value
clip range, the entropy bonus's sign and the coefficients; and the clip-range edges."""

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict

from rlx.algos import PPO, PPOConfig
from rlx.algos.ppo import clipped_surrogate, value_loss


def minibatch(learner, n=6):
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(n, 3, generator=gen)
    out = learner.act(obs)
    return TensorDict({"obs": obs, "action": out["action"], "logp": out["logp"] - 0.1 * torch.arange(n),
                       "value": out["value"] + 0.3, "adv": torch.tensor([3.0, -1.0, 0.5, 2.0, -2.0, 0.0]),
                       "ret": out["value"] + torch.linspace(-1, 1, n)}, batch_size=[n])


@pytest.mark.parametrize("norm_adv", [True, False])
def test_ppo_loss_is_surrogate_plus_value_minus_entropy(norm_adv):
    torch.manual_seed(0)
    cfg = PPOConfig(norm_adv=norm_adv, clip_coef=0.15, vf_coef=0.7, ent_coef=0.05)
    learner = PPO(cfg, gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(3))
    mb = minibatch(learner)
    loss, info = learner.loss(mb)
    dist = learner.dist(mb["obs"])
    adv = mb["adv"]
    if norm_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (dist.log_prob(mb["action"]) - mb["logp"]).exp()
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.85, 1.15)).mean()
    v = learner.critic(mb["obs"]).squeeze(-1)
    vl = 0.5 * torch.max((v - mb["ret"]) ** 2, (mb["value"] + (v - mb["value"]).clamp(-0.15, 0.15) - mb["ret"]) ** 2).mean()
    ent = dist.entropy().mean()
    assert float(info["loss/policy"]) == pytest.approx(float(pg.detach()), rel=1e-5)
    assert float(info["loss/value"]) == pytest.approx(float(vl.detach()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float((pg + 0.7 * vl - 0.05 * ent).detach()), rel=1e-5)


def test_clip_range_edges_and_clipfrac():
    old = torch.zeros(4)
    adv = torch.ones(4)
    ratio = torch.tensor([0.79, 0.81, 1.19, 1.21])
    loss, info = clipped_surrogate(ratio.log(), old, adv, 0.2)
    # A > 0: min(r, clip(r)) -> 0.79, 0.81, 1.19, 1.2
    assert float(loss) == pytest.approx(-(0.79 + 0.81 + 1.19 + 1.2) / 4, rel=1e-6)
    assert float(info["train/clipfrac"]) == pytest.approx(0.5)
    loss, _ = clipped_surrogate(ratio.log(), old, -adv, 0.2)  # A < 0: max(r, clip(r)) -> 0.8, 0.81, 1.19, 1.21
    assert float(loss) == pytest.approx((0.8 + 0.81 + 1.19 + 1.21) / 4, rel=1e-6)
    weighted, _ = clipped_surrogate(torch.zeros(2), torch.zeros(2), torch.ones(2), 0.2, torch.tensor([2.0, 0.0]))
    assert float(weighted) == pytest.approx(-1.0)  # weights multiply the per-sample terms before the mean


def test_value_clip_keeps_the_larger_error_on_both_sides():
    old, ret = torch.zeros(2), torch.tensor([1.0, -1.0])
    v = torch.tensor([0.5, -0.5])  # moved towards the return by more than the clip 0.2
    assert float(value_loss(v, old, ret, 0.2)) == pytest.approx(0.5 * 0.8**2)  # the clipped error is larger
    v = torch.tensor([-0.5, 0.5])  # moved away from the return: the unclipped error is larger
    assert float(value_loss(v, old, ret, 0.2)) == pytest.approx(0.5 * 1.5**2)
    # the clip bounds the move V - V_old, not V + V_old: from V_old = -1 to V = 0 (towards R = 1) the
    # clipped value is -0.8, an error of 1.8 (1 unclipped); V + V_old = -1 would clip to -1.2, error 2.2
    assert float(value_loss(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([1.0]), 0.2)) == pytest.approx(0.5 * 1.8**2)
