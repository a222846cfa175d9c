"""PPO's loss is one autograd node with a hand-written backward (`_PPOHeadLoss`): its value, its
metrics and its gradients with respect to every network parameter must equal the composite loss
built from `clipped_surrogate`, `value_loss` and the distributions, with autograd, on minibatches
where the surrogate clip, the value clip, ties of both maxima and the log-std bounds are all hit."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

import rlx.algos.ppo as ppo_module
from rlx.algos import PPO, PPOConfig, ppo
from rlx.algos.ppo import _PPOHeadLoss, clipped_surrogate, value_loss
from rlx.core.nets import Categorical, Normal

OBS = gym.spaces.Box(-1, 1, (3,))


@pytest.fixture(autouse=True, params=[True, False], ids=["numpy-head", "torch-head"])
def head_path(request, monkeypatch):
    """Every test runs on both implementations of the head: numpy (CPU) and torch (any device)."""
    monkeypatch.setattr(ppo_module, "NUMPY_HEAD", request.param)
    return request.param


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


def test_numpy_and_torch_heads_agree_and_the_numpy_head_runs_on_cpu(head_path, monkeypatch):
    """The two paths give the same loss, metrics and gradients; on CPU the numpy one is taken."""
    torch.manual_seed(3)
    for act in (gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))):
        learner = PPO(PPOConfig(hidden=[8]), OBS, act)
        mb = minibatch(learner, n=16)
        calls = []
        real = ppo_module._head_terms
        monkeypatch.setattr(ppo_module, "_head_terms", lambda ops, *a: calls.append(ops) or real(ops, *a))
        out = {}
        for flag in (True, False):
            monkeypatch.setattr(ppo_module, "NUMPY_HEAD", flag)
            loss, info = learner.loss(mb)
            out[flag] = (loss, torch.stack(list(info.values())), grads(learner, loss))
        assert calls == [ppo_module._NumpyOps, ppo_module._TorchOps]
        torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-6, atol=1e-7)
        for a, b in zip(out[True][2], out[False][2]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        monkeypatch.setattr(ppo_module, "_head_terms", real)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_update_writes_the_same_gradients_as_autograd(head_path, discrete, activation, monkeypatch):
    """`update` writes the closed-form gradient straight into `.grad` (tanh / relu networks) or
    goes through `loss().backward()` (any other); with the network's backward left to autograd
    (FUSED_NETWORK off) the updated parameters and metrics are the same."""
    act = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(ppo_module, "FUSED_NETWORK", fused)
        torch.manual_seed(4)
        learner = PPO(PPOConfig(hidden=[8, 8], activation=activation, num_minibatches=2, update_epochs=3), OBS, act)
        mb = minibatch(learner, n=16)
        batch = TensorDict({k: v.reshape(8, 2, *v.shape[1:]) for k, v in mb.items()}, batch_size=[8, 2])
        calls = []
        real = learner._write_grads
        monkeypatch.setattr(learner, "_write_grads", lambda m: calls.append(real(m)) or calls[-1])
        torch.manual_seed(5)  # the minibatch order
        metrics = learner.update(batch)
        results.append(([p.detach().clone() for p in learner.modules.parameters()], metrics))
        assert len(calls) == 6  # 3 epochs x 2 minibatches
        closed_form = fused and activation != "elu"
        assert all((c is not None) == closed_form for c in calls)  # gradients written without autograd
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for k, v in results[0][1].items():
        assert v == pytest.approx(results[1][1][k], rel=1e-4, abs=1e-6), k

def _head_loss(out, value, old_logp, old_value, ret, clip=0.5, value_clip=0.5):
    """The loss node on hand-made discrete outputs (action 0 of every row, vf_coef 1, no entropy,
    no advantage normalization): raw [2, n, A] with the value in row 0, column 0."""
    n, A = out.shape
    raw = torch.stack([torch.cat([value[:, None], torch.zeros(n, A - 1)], 1), out])
    return _PPOHeadLoss.apply(raw, None, None, torch.zeros(n), old_logp, torch.ones(n), old_value, ret, True, clip,
                              value_clip, 0.0, 1.0, False, (-5.0, 2.0), ppo.NUMPY_HEAD)


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


def test_the_numpy_log_softmax_is_shifted_row_by_row():
    """Logits far from 0 (exp overflows without the shift) and rows far apart (a shift shared by
    all rows underflows the others): the per-row max keeps both exact."""
    out = np.array([[100.0, 99.0, 98.0], [-100.0, -101.0, -99.0]], dtype=np.float32)
    got = ppo._NumpyOps.log_softmax(out)
    want = torch.tensor(out, dtype=torch.float64).log_softmax(-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ppo._TorchOps.log_softmax(torch.from_numpy(out)).numpy(), want, rtol=1e-6, atol=1e-6)

