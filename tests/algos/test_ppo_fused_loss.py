"""PPO's loss is one autograd node with a hand-written backward (`_PPOHeadLoss`): its value, its
metrics and its gradients with respect to every network parameter must equal the composite loss
built from `clipped_surrogate`, `value_loss` and the distributions, with autograd, on minibatches
where the surrogate clip, the value clip, ties of both maxima and the log-std bounds are all hit."""

import gymnasium as gym
import pytest
import torch

from rlx.algos import PPO, PPOConfig, ppo
from rlx.algos.ppo import _PPOHeadLoss, clipped_surrogate, value_loss
from rlx.core.nets import Categorical, Normal

OBS = gym.spaces.Box(-1, 1, (3,))


def composite_loss(learner, mb):
    """The loss written with the shared pieces, as PPO computed it before the fused node."""
    cfg = learner.cfg
    out, v = learner.net(mb["obs"])
    dist = Categorical(out) if learner.discrete else Normal(out, learner.net.log_std.clamp(*learner.net.bounds))
    logp, entropy = dist.log_prob(mb["action"]), dist.entropy().mean()
    adv = mb["adv"]
    if cfg.norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg, info = clipped_surrogate(logp, mb["logp"], adv, cfg.clip_coef)
    vl = value_loss(v, mb["value"], mb["ret"], cfg.clip_coef if cfg.clip_vloss else None)
    info.update({"loss/policy": pg, "loss/value": vl, "loss/entropy": entropy})
    return pg - cfg.ent_coef * entropy + cfg.vf_coef * vl, info


def minibatch(learner, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    with torch.no_grad():
        out = learner.act(obs)
    # old log-probs spread so that ratios fall on both sides of the clip range and inside it
    shift = torch.linspace(-0.6, 0.6, n)
    return {"obs": obs, "action": out["action"], "logp": out["logp"] + shift,
            "value": out["value"] + torch.linspace(-0.5, 0.5, n), "adv": torch.randn(n, generator=g),
            "ret": out["value"] + torch.randn(n, generator=g)}


def grads(learner, loss):
    params = list(learner.modules.parameters())
    return torch.autograd.grad(loss, params)


CASES = [dict(), dict(norm_adv=False), dict(clip_vloss=False), dict(ent_coef=0.3, vf_coef=0.7, clip_coef=0.1)]


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("kw", CASES)
def test_fused_loss_value_metrics_and_gradients_equal_the_composite(discrete, kw):
    torch.manual_seed(0)
    act = gym.spaces.Discrete(4) if discrete else gym.spaces.Box(-1, 1, (2,))
    learner = PPO(PPOConfig(hidden=[16, 16], **kw), OBS, act)
    mb = minibatch(learner)
    fused, info = learner.loss(mb)
    ref, ref_info = composite_loss(learner, mb)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    for k, v in ref_info.items():
        torch.testing.assert_close(info[k], v.detach(), rtol=1e-5, atol=1e-6, msg=k)
    assert 0 < float(info["train/clipfrac"]) < 1  # both branches of the surrogate are exercised
    for a, b in zip(grads(learner, fused), grads(learner, ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gradients_at_the_kinks_follow_autograd():
    """Ratios exactly 1 (the two surrogate branches tie), old values equal to the new (the value
    branches tie), and a log std outside its bounds (clamped: no gradient)."""
    torch.manual_seed(1)
    learner = PPO(PPOConfig(hidden=[8], ent_coef=0.05), OBS, gym.spaces.Box(-1, 1, (2,)))
    with torch.no_grad():
        learner.net.log_std.copy_(torch.tensor([-7.0, 0.3]))  # the first is below the -5 bound
    mb = minibatch(learner, n=6)
    with torch.no_grad():
        dist, v = learner.heads(mb["obs"])
        mb["logp"] = dist.log_prob(mb["action"])  # ratio 1 everywhere
        mb["value"] = v.clone()
    fused, info = learner.loss(mb)
    ref, ref_info = composite_loss(learner, mb)
    # a log std away from 0 (and one clamped): the Gaussian entropy sum(1/2 + log(2 pi)/2 + log std)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(info["loss/entropy"], ref_info["loss/entropy"].detach())
    gf, gr = grads(learner, fused), grads(learner, ref)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    names = [n for n, _ in learner.modules.named_parameters()]
    g_log_std = gf[names.index("log_std")]
    assert float(g_log_std[0]) == 0.0 and float(g_log_std[1]) != 0.0


def test_a_single_row_is_not_normalized_and_still_differentiates():
    torch.manual_seed(2)
    learner = PPO(PPOConfig(hidden=[8]), OBS, gym.spaces.Discrete(3))
    mb = {k: v[:1] for k, v in minibatch(learner).items()}
    fused, _ = learner.loss(mb)
    ref, _ = composite_loss(learner, mb)
    torch.testing.assert_close(fused, ref)
    for a, b in zip(grads(learner, fused), grads(learner, ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _head_loss(out, value, old_logp, old_value, ret, clip=0.5, value_clip=0.5):
    """_PPOHeadLoss on hand-made discrete outputs (action 0 of every row, A = 1, vf_coef 1, no entropy)."""
    n = out.shape[0]
    return _PPOHeadLoss.apply(out, value, None, torch.zeros(n), old_logp, torch.ones(n), old_value, ret, True, clip,
                              value_clip, 0.0, 1.0, False, (-5.0, 2.0))


def test_clip_fraction_counts_ratios_strictly_outside_the_range():
    """|r - 1| = 0.5 exactly at clip 0.5 is not clipped (as `clipped_surrogate` counts it)."""
    out = torch.tensor([[0.0, -200.0]] * 3)  # log P(action 0) = 0 exactly
    ratio = torch.tensor([1.5, 1.25, 2.0])
    _, stats = _head_loss(out, torch.zeros(3), -ratio.log(), torch.zeros(3), torch.zeros(3))
    assert float(stats[4]) == pytest.approx(1 / 3)
    _, info = clipped_surrogate(torch.zeros(3), -ratio.log(), torch.ones(3), 0.5)
    assert float(info["train/clipfrac"]) == pytest.approx(1 / 3)


def test_a_tie_of_the_value_errors_takes_the_unclipped_gradient():
    """V = 1, V_old = -0.5, R = 0.5, clip 0.5: the errors 0.5 (unclipped) and -0.5 (clipped at
    V_old + 0.5 = 0) tie; the gradient is the unclipped error's, d/dV 0.5 (V - R)^2 = 0.5 (the
    clipped branch, outside its range, would give 0)."""
    value = torch.tensor([1.0], requires_grad=True)
    loss, stats = _head_loss(torch.tensor([[0.0, -200.0]]), value, torch.zeros(1), torch.tensor([-0.5]), torch.tensor([0.5]))
    assert float(stats[1]) == pytest.approx(0.5 * 0.25)
    loss.backward()
    assert float(value.grad) == pytest.approx(0.5)


def test_the_stat_scale_halves_the_value_term_per_dtype_cold_or_cached(monkeypatch):
    """[1, 0.5, 1, 1, 1] in the dtype of the stats, built on first use and cached per (device, dtype):
    a float64 loss after a float32 one keeps float64 stats, and the other way round."""
    monkeypatch.setattr(ppo, "_STAT_SCALES", {})
    for dtype in (torch.float64, torch.float32, torch.float64):
        scale = ppo._stat_scale(torch.zeros(5, dtype=dtype))
        assert scale.dtype == dtype and scale.tolist() == [1.0, 0.5, 1.0, 1.0, 1.0]
    monkeypatch.setattr(ppo, "_STAT_SCALES", {})
    torch.manual_seed(0)
    learner = PPO(PPOConfig(hidden=[8]), OBS, gym.spaces.Discrete(3))
    mb = minibatch(learner)
    fused, info = learner.loss(mb)  # the cold cache
    ref, ref_info = composite_loss(learner, mb)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    for k, v in ref_info.items():
        torch.testing.assert_close(info[k], v.detach(), rtol=1e-5, atol=1e-6, msg=k)
