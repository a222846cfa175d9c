"""HILP's phi objective on hand-checked targets: r + gamma * (1 - terminated) * Vbar(s', g) per
ensemble member, the asymmetric weight from the min-target advantage, and the target network."""

import pytest
import torch

from rlx.algos.hilp import HILP
from rlx.algos.offline_ac import expectile_loss
from tests.hilp.test_hilp import ACT, OBS, small_cfg


def make():
    torch.manual_seed(0)
    learner = HILP(small_cfg(discount=0.5, expectile=0.9), OBS, ACT)
    learner.set_dataset_stats(torch.randn(100, 3))
    with torch.no_grad():  # the online phi differs from its Polyak target, as during training
        for p in learner.phi.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return learner


def expected_loss(learner, s, s2, g, r, term):
    nv = learner.phi_target.value(s2, g)  # [2, B]
    keep = (~term).float()
    adv = r + 0.5 * keep * nv.min(0).values - learner.phi_target.value(s, g).mean(0)
    v = learner.phi.value(s, g)
    return sum(expectile_loss(r + 0.5 * keep * nv[e] - v[e], 0.9, sign=adv) for e in range(2))


def test_phi_target_stops_at_the_goal_and_bootstraps_elsewhere():
    learner = make()
    gen = torch.Generator().manual_seed(1)
    s, s2, g = (torch.randn(16, 3, generator=gen) for _ in range(3))
    term = torch.arange(16) % 3 == 0
    r = torch.where(term, 0.0, -1.0)
    loss, info = learner.phi_loss(s, s2, g, r, term)
    assert float(loss.detach()) == pytest.approx(float(expected_loss(learner, s, s2, g, r, term).detach()), rel=1e-5)
    # at a terminal row the target is the reward alone: the next state's value must not leak in
    far = torch.randn(16, 3, generator=gen) * 3 + 2  # other next states: other target values
    l_near, _ = learner.phi_loss(s[:4][term[:4]], s2[:4][term[:4]], g[:4][term[:4]], r[:4][term[:4]], term[:4][term[:4]])
    l_far, _ = learner.phi_loss(s[:4][term[:4]], far[:4][term[:4]], g[:4][term[:4]], r[:4][term[:4]], term[:4][term[:4]])
    assert float(l_near.detach()) == pytest.approx(float(l_far.detach()), rel=1e-6)
    l_boot, _ = learner.phi_loss(s[1:3], far[1:3], g[1:3], r[1:3], term[1:3])
    l_boot_near, _ = learner.phi_loss(s[1:3], s2[1:3], g[1:3], r[1:3], term[1:3])
    assert abs(float(l_boot.detach()) - float(l_boot_near.detach())) > 1e-4  # non-terminal rows do bootstrap


def test_phi_advantage_metric_uses_the_target_networks():
    learner = make()
    s, s2, g = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 3)
    term = torch.arange(8) % 2 == 0
    r = torch.where(term, 0.0, -1.0)
    _, info = learner.phi_loss(s, s2, g, r, term)
    adv = r + 0.5 * (~term) * learner.phi_target.value(s2, g).min(0).values - learner.phi_target.value(s, g).mean(0)
    assert float(info["train/phi_adv_mean"]) == pytest.approx(float(adv.mean()), rel=1e-5)
