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


@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_forward_and_autograd_equal_a_plain_relu_mlp_per_member(layer_norm):
    """`EnsembleMLP.forward` (ReLU applied in place on each layer's fresh output) gives each
    member's plain `relu(x W + b)` stack, and autograd through it the same gradients, for a shared
    input, per-member inputs and `member=`."""
    import torch.nn.functional as F

    from rlx.core.nets import EnsembleMLP

    torch.manual_seed(1)
    net = EnsembleMLP(4, 3, 2, hidden=(6, 5), act="relu", layer_norm=layer_norm)

    def plain(x, i, params):
        p = dict(zip([n for n, _ in net.named_parameters()], params))
        for layer in range(net.depth):
            x = x @ p[f"weight{layer}"][i] + p[f"bias{layer}"][i, 0]
            if layer < net.depth - 1:
                if layer_norm:
                    x = F.layer_norm(x, x.shape[-1:], eps=net.eps) * p[f"norm_weight{layer}"][i, 0] + p[f"norm_bias{layer}"][i, 0]
                x = F.relu(x)
        return x

    params = list(net.parameters())
    for x, member in ((torch.randn(8, 4), None), (torch.randn(2, 8, 4), None), (torch.randn(8, 4), 1)):
        out = net(x, member)
        if member is None:
            ref = torch.stack([plain(x if x.dim() == 2 else x[i], i, params) for i in range(2)])
        else:
            ref = plain(x, member, params)
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
        g = torch.randn_like(out)
        got = torch.autograd.grad((out * g).sum(), params, allow_unused=True)
        want = torch.autograd.grad((ref * g).sum(), params, allow_unused=True)
        for a, b in zip(got, want):
            if b is None:
                assert a is None or not a.abs().sum()
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ensemble_closed_form_backward_needs_a_derivative_from_the_output():
    from rlx.core.nets import EnsembleMLP

    assert not EnsembleMLP(3, 2, 2, hidden=(4,), act="gelu").closed_form_backward
    assert not EnsembleMLP(3, 2, 2, hidden=(4,), act="tanh", layer_norm=True).closed_form_backward
    assert EnsembleMLP(3, 2, 2, hidden=(), act="gelu").closed_form_backward  # no hidden layer: no activation
