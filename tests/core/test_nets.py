import math

import pytest
import torch

from rlx.core.learner import soft_update
from rlx.core.nets import MLP, Categorical, Normal, RunningMeanStd, TanhNormal


def test_categorical_mask_and_entropy():
    logits = torch.zeros(2, 4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    d = Categorical(logits, mask)
    assert torch.allclose(d.entropy(), torch.tensor([math.log(2), math.log(4)]))
    samples = torch.stack([d.sample() for _ in range(200)])
    assert (samples[:, 0] < 2).all()


def test_normal_log_prob_matches_torch():
    mean, log_std = torch.randn(5, 3), torch.randn(3) * 0.1
    a = torch.randn(5, 3)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(a).sum(-1)
    assert torch.allclose(Normal(mean, log_std).log_prob(a), ref, atol=1e-5)


def test_tanh_normal_log_prob_change_of_variables():
    mean, log_std = torch.randn(4, 2), torch.full((2,), -0.5)
    base = torch.distributions.Normal(mean, log_std.exp())
    ref = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    a = torch.tanh(torch.randn(4, 2) * 0.5)
    assert torch.allclose(TanhNormal(mean, log_std).log_prob(a), ref.log_prob(a).sum(-1), atol=1e-4)


def test_running_mean_std_matches_batch_stats():
    rms = RunningMeanStd((3,))
    x = torch.randn(1000, 3) * 3 + 1
    for chunk in x.split(137):
        rms.update(chunk)
    assert torch.allclose(rms.mean.float(), x.mean(0), atol=1e-4)
    assert torch.allclose(rms.var.float(), x.var(0, unbiased=False), atol=1e-3)


def test_soft_update_interpolates():
    a, b = MLP(2, 1, (4,)), MLP(2, 1, (4,))
    before = [p.clone() for p in a.parameters()]
    soft_update(a, b, 0.25)
    for p0, pa, pb in zip(before, a.parameters(), b.parameters()):
        assert torch.allclose(pa, 0.75 * p0 + 0.25 * pb)


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("shared_input", [True, False])
def test_ensemble_closed_form_backward_equals_autograd(act, shared_input):
    """`forward_cached` / `backward_cached` give the forward and the parameter gradients that
    autograd gives, with members of different widths, written into given tensors too."""
    from rlx.core.nets import EnsembleMLP

    torch.manual_seed(0)
    net = EnsembleMLP(5, [1, 3], 2, hidden=(7, 6), act=act)
    assert net.closed_form_backward
    x = torch.randn(9, 5) if shared_input else torch.randn(2, 9, 5)
    out = net(x)
    g = torch.randn_like(out)
    ref = torch.autograd.grad((out * g).sum(), list(net.parameters()))
    out2, cache = net.forward_cached(x)
    torch.testing.assert_close(out2, out.detach(), rtol=0, atol=0)
    for a, b in zip(net.backward_cached(cache, g), ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    buffers = [torch.full_like(p, 7.0) for p in net.parameters()]  # overwritten, not accumulated into
    written = net.backward_cached(cache, g, out=buffers)
    assert all(w is b for w, b in zip(written, buffers))
    for a, b in zip(buffers, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ensemble_closed_form_backward_needs_a_derivative_from_the_output():
    from rlx.core.nets import EnsembleMLP

    assert not EnsembleMLP(3, 2, 2, hidden=(4,), act="gelu").closed_form_backward
    assert not EnsembleMLP(3, 2, 2, hidden=(4,), act="tanh", layer_norm=True).closed_form_backward
    assert EnsembleMLP(3, 2, 2, hidden=(), act="gelu").closed_form_backward  # no hidden layer: no activation
