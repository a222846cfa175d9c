"""SAC's and TD3's closed-form critic gradients (`q_regression_step`, `q_action_grad`,
`EnsembleMLP.input_grad_cached`) against autograd on the composite losses."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos.sac import SAC, SACConfig, closed_form, q_action_grad
from rlx.algos.td3 import TD3, TD3Config
from rlx.core.nets import EnsembleMLP, EnsembleQ

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(np.array([-2.0, 0.0, -1.0], np.float32), np.array([2.0, 1.0, 1.0], np.float32))


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.from_numpy(ACT.low), torch.from_numpy(ACT.high)
    return TensorDict({"obs": torch.randn(n, 5, generator=g), "action": low + (high - low) * torch.rand(n, 3, generator=g),
                       "reward": torch.randn(n, generator=g), "next_obs": torch.randn(n, 5, generator=g),
                       "terminated": torch.rand(n, generator=g) < 0.2}, batch_size=[n])


def _pair(make):
    out = []
    for cf in (True, False):
        torch.manual_seed(0)
        learner = make()
        learner.closed_form = cf
        out.append(learner)
    return out


def _same_updates(a, b, steps=6):
    for step in range(steps):
        batch = _batch(seed=step)
        torch.manual_seed(100 + step)
        ma = a.update(batch)
        torch.manual_seed(100 + step)
        mb = b.update(batch)
        assert ma.keys() == mb.keys()
        for k in ma:
            assert ma[k] == pytest.approx(mb[k], rel=1e-4, abs=1e-6), (step, k)
    for (name, pa), pb in zip(a.modules.named_parameters(), b.modules.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=name)
    return ma


@pytest.mark.parametrize("policy_frequency,autotune", [(1, True), (2, True), (1, False)])
def test_sac_closed_form_updates_equal_autograd(policy_frequency, autotune):
    a, b = _pair(lambda: SAC(SACConfig(hidden=[16, 16], policy_frequency=policy_frequency, autotune=autotune,
                                       q_lr=1e-2, policy_lr=1e-2), OBS, ACT))
    metrics = _same_updates(a, b)
    assert {"loss/q", "loss/actor", "train/entropy"} <= set(metrics)
    torch.testing.assert_close(a.log_alpha, b.log_alpha, rtol=1e-4, atol=1e-6)
    assert a.closed_form and closed_form(a, "critic_loss", SAC) and not closed_form(b, "critic_loss", SAC)


def test_td3_closed_form_updates_equal_autograd():
    a, b = _pair(lambda: TD3(TD3Config(hidden=[16, 16], policy_delay=2, lr=1e-2), OBS, ACT))
    assert "loss/actor" in _same_updates(a, b)
    for pa, pb in zip(a.actor_target.parameters(), b.actor_target.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)


def test_an_overridden_loss_is_honoured_through_autograd():
    calls = []

    class MySAC(SAC):
        def critic_loss(self, *args):
            calls.append("critic")
            loss, q = super().critic_loss(*args)
            return 0.0 * loss, q  # no gradient: the critics must not move

    sac = MySAC(SACConfig(hidden=[8], policy_frequency=1), OBS, ACT)
    before = [p.detach().clone() for p in sac.q.parameters()]
    sac.update(_batch())
    assert calls == ["critic"] and not closed_form(sac, "critic_loss", SAC) and closed_form(sac, "actor_loss", SAC)
    for p, q in zip(sac.q.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-7)  # Adam with a zero gradient: no move
    seen = []
    sac.actor_loss = lambda obs, alpha: seen.append(1) or SAC.actor_loss(sac, obs, alpha)  # on the instance
    sac.update(_batch())
    assert seen == [1] and not closed_form(sac, "actor_loss", SAC)


def test_sac_alpha_step_closed_form_and_an_overridden_alpha_loss():
    """The temperature's closed-form gradient -(mean log pi + target_entropy) is autograd's of
    `alpha_loss`; an `alpha_loss` overridden on the instance is used through autograd instead."""
    sac = SAC(SACConfig(hidden=[8], policy_frequency=1, q_lr=0.1), OBS, ACT)
    logp = torch.randn(20)
    ref = torch.autograd.grad(sac.alpha_loss(logp), sac.log_alpha)[0]
    before = float(sac.log_alpha)
    sac._alpha_step(logp)
    torch.testing.assert_close(sac.log_alpha.grad, ref)
    assert float(sac.log_alpha) < before if float(ref) > 0 else float(sac.log_alpha) > before
    calls = []
    sac.alpha_loss = lambda lp: calls.append(1) or 0.0 * SAC.alpha_loss(sac, lp)
    sac.update(_batch())
    assert calls == [1] and float(sac.log_alpha.grad) == 0.0


@pytest.mark.parametrize("member", [None, 0, 1])
def test_q_action_grad_is_autograd_of_the_min_or_the_member(member):
    torch.manual_seed(0)
    q = EnsembleQ(5, 3, 2, hidden=[16, 16], act="relu", orthogonal=False)
    q.requires_grad_(False)
    obs, act = torch.randn(40, 5), torch.rand(40, 3) * 2 - 1
    with torch.no_grad():  # shift member 1 so that each member is the min in about half of the rows
        out = q(obs, act)
        q.bias2[1] += (out[0] - out[1]).median()
    value, grad = q_action_grad(q, obs, act, member)
    a = act.clone().requires_grad_(True)
    out = q(obs, a)
    ref = out.min(0).values if member is None else out[member]
    ref.sum().backward()
    if member is None:  # both members are the min somewhere: the selection is tested row by row
        assert 0 < int((out[0] <= out[1]).sum()) < 40
    torch.testing.assert_close(value, ref.detach())
    torch.testing.assert_close(grad, a.grad)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("shared", [True, False])
def test_input_grad_cached_is_autograd_of_the_input(act, shared):
    torch.manual_seed(1)
    net = EnsembleMLP(6, 4, 3, hidden=[8, 8], act=act)
    x = (torch.randn(10, 6) if shared else torch.randn(3, 10, 6)).requires_grad_(True)
    w = torch.randn(3, 10, 4)
    (net(x) * w).sum().backward()
    _, cache = net.forward_cached(x.detach())
    got = net.input_grad_cached(cache, w)
    assert got.shape == x.shape
    torch.testing.assert_close(got, x.grad)


def test_sac_actor_closed_form_gradient_is_autograd_of_its_loss():
    torch.manual_seed(3)
    sac = SAC(SACConfig(hidden=[16, 16]), OBS, ACT)
    sac.q.requires_grad_(False)
    obs, alpha = torch.randn(64, 5), torch.tensor(0.37)
    assert sac.actor.closed_form_backward
    torch.manual_seed(5)
    loss, _ = sac.actor_loss(obs, alpha)
    loss.backward()
    want = [p.grad.clone() for p in sac.actor.parameters()]
    sac.actor.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same draw
    a, logp, cache = sac.actor.sample_cached(obs)
    q_min, dq_da = q_action_grad(sac.q, obs, a)
    assert float((alpha * logp - q_min).mean()) == pytest.approx(float(loss), rel=1e-5)
    sac.actor.backward_cached(cache, -dq_da / 64, (alpha / 64).expand(64))
    for p, w in zip(sac.actor.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("own_cache", [True, False])
def test_member_input_grad_cached_is_autograd_of_one_member_on_some_rows(act, own_cache):
    torch.manual_seed(2)
    net = EnsembleMLP(6, 4, 3, hidden=[8, 8], act=act)  # 4 output columns: the all-ones gradient sums them
    x = torch.randn(10, 6)
    rows, cols = torch.tensor([1, 4, 5, 9]), slice(2, None)
    member = 2
    xg = x.clone().requires_grad_(True)
    net(xg)[member, rows].sum().backward()
    out, cache = net.forward_cached(x, member) if own_cache else net.forward_cached(x)
    torch.testing.assert_close(out if own_cache else out[member], net(x)[member].detach())
    got = net.member_input_grad_cached(cache, member, rows, cols)
    assert got.shape == (4, 4)
    torch.testing.assert_close(got, xg.grad[rows, 2:])
    torch.testing.assert_close(net.member_input_grad_cached(cache, member), _all_rows_grad(net, x, member))


def _all_rows_grad(net, x, member):
    xg = x.clone().requires_grad_(True)
    net(xg)[member].sum().backward()
    return xg.grad


def test_sample_nograd_is_the_same_draw_as_sample():
    sac = SAC(SACConfig(hidden=[16, 16]), OBS, ACT)
    obs = torch.randn(7, 5)
    torch.manual_seed(11)
    a, logp = sac.actor.sample(obs)
    torch.manual_seed(11)
    b, logq = sac.actor.sample_nograd(obs)
    torch.testing.assert_close(b, a.detach())
    torch.testing.assert_close(logq, logp.detach())
    assert not b.requires_grad
