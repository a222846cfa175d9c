import pytest
import torch

from rlx.algos.offline_ac import awr_weights, ddpg_bc_loss, expectile_loss
from rlx.algos.adapt import opex_action


def test_expectile_loss_is_asymmetric_squared_error():
    diff = torch.tensor([2.0, -2.0])
    # tau * u^2 above, (1 - tau) * u^2 below
    assert expectile_loss(diff[:1], 0.7).item() == pytest.approx(0.7 * 4)
    assert expectile_loss(diff[1:], 0.7).item() == pytest.approx(0.3 * 4)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * 4)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_minimizer_is_the_expectile(tau):
    # the minimizer v of E[L_tau(x - v)] is the tau-expectile: above the mean for tau > 0.5
    x = torch.tensor([0.0, 0.0, 0.0, 10.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(2000):
        opt.zero_grad()
        expectile_loss(x - v, tau).backward()
        opt.step()
    # closed form: tau * (10 - v) = 3 (1 - tau) v
    expected = 10 * tau / (tau + 3 * (1 - tau))
    assert v.item() == pytest.approx(expected, abs=1e-3)
    assert (v.item() > x.mean().item()) == (tau > 0.5)


def test_awr_weights_exponentiate_and_clip():
    adv = torch.tensor([-1.0, 0.0, 0.5, 100.0])
    w = awr_weights(adv, alpha=2.0, max_weight=50.0)
    assert torch.allclose(w[:3], torch.exp(2.0 * adv[:3]))
    assert w[3].item() == 50.0 and torch.isfinite(w).all()
    assert (w[1:] >= w[:-1]).all()


def test_ddpg_bc_normalization_makes_the_q_term_scale_free():
    torch.manual_seed(0)
    mu = torch.randn(64, 3, requires_grad=True)
    data = torch.randn(64, 3)
    grads = []
    for scale in (1.0, 1000.0):
        q = scale * (-(mu - 0.3).pow(2).sum(-1))  # a critic, then the same critic in other units
        loss, bc = ddpg_bc_loss(q, mu, data, alpha=0.4)
        (g,) = torch.autograd.grad(loss, mu)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)  # lambda = 1/stopgrad(mean|Q|)
    assert bc.item() == pytest.approx((mu - data).pow(2).sum(-1).mean().item())


def test_ddpg_bc_lambda_is_not_differentiated():
    mu = torch.zeros(4, 1, requires_grad=True)
    q = 2.0 * mu.squeeze(-1) + 1.0  # mean |Q| = 1 at mu = 0
    loss, _ = ddpg_bc_loss(q, mu, torch.zeros(4, 1), alpha=0.0)
    (g,) = torch.autograd.grad(loss, mu)
    assert torch.allclose(g, torch.full((4, 1), -2.0 / 4))  # only -dQ/dmu / (B * mean|Q|)


def test_opex_steps_towards_the_critic_maximum_and_clips():
    target = torch.tensor([0.5, -0.25])
    q = lambda obs, a: -(a - target).pow(2).sum(-1)  # noqa: E731  maximum at a = target
    actor = lambda obs: torch.zeros(obs.shape[0], 2)  # noqa: E731
    obs = torch.zeros(3, 4)
    small = opex_action(actor, q, obs, beta=0.1)
    assert torch.allclose(small, 0.1 * 2 * target.expand(3, 2))  # a + beta * grad, grad = -2 (a - target)
    assert torch.equal(small.sign(), target.sign().expand(3, 2))  # moves towards the maximum
    assert torch.allclose(opex_action(actor, q, obs, beta=0.5), target.expand(3, 2))  # exact step onto the maximum
    far = opex_action(actor, q, obs, beta=10.0)
    assert far.abs().max() <= 1.0 and torch.allclose(far, torch.tensor([1.0, -1.0]).expand(3, 2))


def test_td3bc_actor_loss_is_td3bc_formula_on_a_fixed_batch():
    """TD3+BC eq. 3 as in its code: -alpha / mean|Q_1| * mean Q_1(s, pi(s)) + F.mse_loss(pi(s), a),
    the BC term a mean over action dims (not a sum), alpha 2.5, through the learner's own actor_loss."""
    import gymnasium as gym
    import numpy as np

    from rlx.algos.offline_ac import OfflineActorCritic
    from rlx.algos.registry import preset_config

    torch.manual_seed(0)
    cfg = preset_config("td3bc", hidden=[16])
    assert cfg.extraction == "td3bc" and cfg.td3bc_alpha == 2.5
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    learner = OfflineActorCritic(cfg, gym.spaces.Box(-1.0, 1.0, (4,), np.float32), box)
    obs, action = torch.randn(32, 4), torch.rand(32, 3) * 2 - 1
    loss, info = learner.actor_loss(obs, action, None)
    pi = learner.actor(obs)
    q1 = learner.q(obs, pi, member=0)
    bc = ((pi - action) ** 2).mean()
    expected = -2.5 / q1.abs().mean() * q1.mean() + bc
    assert torch.allclose(loss, expected)
    assert torch.allclose(info["train/bc_mse"], bc)
    assert not torch.allclose(info["train/bc_mse"], ((pi - action) ** 2).sum(-1).mean())  # 3x: the old sum
    # lambda is a constant: the gradient of the Q term is alpha / mean|Q_1| times dQ_1/dpi
    mu = pi.detach().requires_grad_(True)
    q = 2.0 * mu.sum(-1) + 1.0
    from rlx.algos.offline_ac import td3bc_actor_loss

    (g,) = torch.autograd.grad(td3bc_actor_loss(q, mu, mu.detach(), 2.5)[0], mu)
    assert torch.allclose(g, -2.5 / q.abs().mean().detach() * 2.0 / 32 * torch.ones_like(mu))
