"""Paths of the torch twins the parity tests do not reach: half-precision inputs are computed in
fp32 and returned in their own dtype (bit-equal to the fp32 result rounded once), the
log-softmax/logsumexp values with autograd on equal those without, on the global-shift path and
on the per-segment fallback, and TD(lambda) differentiates in reward alone."""

import pytest
import torch

from rlx import kernels

HALF = [torch.float16, torch.bfloat16]


def ptr_and_x(dtype, far=False):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([300, 1, 0, 57, 400])
    x = torch.randn(int(lengths.sum()), generator=gen) * 3 + 1
    if far:  # one segment far below the global max: exp(x - g) underflows, the per-segment shift is used
        x[301:358] -= 1e4
    return kernels.lengths_to_ptr(lengths), x.to(dtype)


def per_segment(fn, x, ptr):
    return [fn(x[a:b].double()) for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist()) if b > a]


def many_segments(dtype, far):
    """2000 short segments (0 to 6 entries): many independently rounded outputs."""
    gen = torch.Generator().manual_seed(3)
    ptr = kernels.lengths_to_ptr(torch.randint(7, (2000,), generator=gen))
    x = torch.randn(int(ptr[-1]), generator=gen) * 4
    if far:
        x[: int(ptr[1000])] -= 1e4  # the first half far below the global max: the per-segment shift path
    return ptr, x.to(dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", ["segment_sum", "segment_mean", "segment_logsumexp", "segment_log_softmax"])
@pytest.mark.parametrize("far", [False, True], ids=["global_shift", "per_segment_shift"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
def test_segment_ops_on_half_inputs_compute_in_fp32(op, dtype, far, requires_grad):
    for ptr, x in (ptr_and_x(dtype, far), many_segments(dtype, far)):
        out = getattr(kernels, op)(x.clone().requires_grad_(requires_grad), ptr)
        assert out.dtype == dtype
        ref = getattr(kernels, op)(x.float().requires_grad_(requires_grad), ptr).detach()  # fp32 on the same path
        torch.testing.assert_close(out.detach(), ref.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("N", [3, 65], ids=["closed_form_scan", "blocked_scan"])
@pytest.mark.parametrize("dtype", HALF)
def test_scatter_add_and_time_ops_on_half_inputs_compute_in_fp32(dtype, N):
    """N = 3 takes the float64 closed-form scan, N = 65 (more columns than it takes) the blocked
    scan, which runs in the dtype it is given: only the fp32 upcast makes it the fp32 result."""
    gen = torch.Generator().manual_seed(1)
    src = torch.rand(2000, 3, generator=gen).to(dtype)
    index = torch.randint(4, (2000,), generator=gen)
    out = kernels.scatter_add(src, index, 4)
    assert out.dtype == dtype
    torch.testing.assert_close(out, kernels.scatter_add(src.float(), index, 4).to(dtype), rtol=0, atol=0)
    T = 300
    r, v, nv = (torch.rand(T, N, generator=gen).to(dtype) for _ in range(3))
    term, trunc = torch.rand(T, N, generator=gen) < 0.01, torch.rand(T, N, generator=gen) < 0.01
    y = kernels.discount_cumsum(r, 0.999)
    assert y.dtype == dtype
    torch.testing.assert_close(y, kernels.discount_cumsum(r.float(), 0.999).to(dtype), rtol=0, atol=0)
    g = kernels.lambda_returns(r, nv, term, trunc, 0.999, 0.95)
    assert g.dtype == dtype
    torch.testing.assert_close(g, kernels.lambda_returns(r.float(), nv.float(), term, trunc, 0.999, 0.95).to(dtype),
                               rtol=0, atol=0)
    adv, ret = kernels.gae(r, v, nv, term, trunc, 0.999, 0.95)
    adv32, ret32 = kernels.gae(r.float(), v.float(), nv.float(), term, trunc, 0.999, 0.95)
    assert adv.dtype == ret.dtype == dtype
    torch.testing.assert_close(adv, adv32.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(ret, ret32.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("far", [False, True], ids=["global_shift", "per_segment_shift"])
def test_log_softmax_and_logsumexp_with_autograd_match_the_per_segment_definition(far):
    ptr, x = ptr_and_x(torch.float64, far)
    ref_ls = torch.cat(per_segment(lambda s: torch.log_softmax(s, 0), x, ptr))
    ref_lse = torch.tensor([torch.logsumexp(s, 0) for s in per_segment(lambda s: s, x, ptr)], dtype=torch.float64)
    nonempty = ptr.diff() > 0
    for requires_grad in (False, True):
        xi = x.clone().requires_grad_(requires_grad)
        ls = kernels.segment_log_softmax(xi, ptr)
        lse = kernels.segment_logsumexp(xi, ptr)
        torch.testing.assert_close(ls.detach(), ref_ls, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(lse.detach()[nonempty], ref_lse, rtol=1e-12, atol=1e-9)
        assert lse[~nonempty].item() == float("-inf")
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(kernels.segment_logsumexp(xg, ptr)[nonempty].sum(), xg)
    torch.testing.assert_close(g, torch.cat(per_segment(lambda s: torch.softmax(s, 0), x, ptr)), rtol=1e-10, atol=1e-12)


def test_lambda_returns_differentiate_in_reward_alone_and_in_next_value_alone():
    gen = torch.Generator().manual_seed(2)
    T, N = 6, 2
    r, nv = torch.rand(T, N, generator=gen, dtype=torch.float64), torch.rand(T, N, generator=gen, dtype=torch.float64)
    term = torch.zeros(T, N, dtype=torch.bool)
    term[2, 0] = True
    trunc = torch.zeros(T, N, dtype=torch.bool)
    for wrt in ("reward", "next_value"):
        ri = r.clone().requires_grad_(wrt == "reward")
        ni = nv.clone().requires_grad_(wrt == "next_value")
        (g,) = torch.autograd.grad(kernels.lambda_returns(ri, ni, term, trunc, 0.9, 0.8).sum(), [ri if wrt == "reward" else ni])
        both_r, both_n = r.clone().requires_grad_(True), nv.clone().requires_grad_(True)
        g_r, g_n = torch.autograd.grad(kernels.lambda_returns(both_r, both_n, term, trunc, 0.9, 0.8).sum(), [both_r, both_n])
        torch.testing.assert_close(g, g_r if wrt == "reward" else g_n)


def test_log_softmax_backward_refuses_create_graph():
    """Its backward is closed-form and not differentiable: a double backward is refused, not wrong."""
    x = torch.randn(6, requires_grad=True)
    ptr = torch.tensor([0, 2, 6])
    y = kernels.segment_log_softmax(x, ptr)
    with pytest.raises(RuntimeError, match=r"^segment_log_softmax supports one backward only \(no create_graph"):
        torch.autograd.grad((y * torch.arange(6.0)).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(kernels.segment_log_softmax(x, ptr)[1], x)  # a plain backward works
    p = torch.cat([x[:2].softmax(0), x[2:].softmax(0)]).detach()
    torch.testing.assert_close(g, torch.tensor([0.0, 1.0, 0, 0, 0, 0]) - torch.cat([p[:2], torch.zeros(4)]))


@pytest.mark.parametrize("empty", [False, True])
def test_global_shift_safety_check_with_and_without_empty_segments(empty):
    """The one-reduction check (no empty segment) and the masked one (some empty) both send a
    segment that underflows under the global shift, or a NaN, to the per-segment path."""
    from rlx.kernels.layout import layout

    ptr = torch.tensor([0, 2, 2, 5]) if empty else torch.tensor([0, 2, 5])
    assert layout(ptr, 5).all_nonempty is (not empty)
    x = torch.tensor([0.0, 1.0, -200.0, -201.0, -202.0])  # exp(-200 - 1) underflows in fp32
    got = kernels.segment_log_softmax(x, ptr)
    want = torch.cat([x[:2].log_softmax(0), x[2:].log_softmax(0)])
    torch.testing.assert_close(got, want)
    lse = kernels.segment_logsumexp(x, ptr)
    torch.testing.assert_close(lse[-1], torch.logsumexp(x[2:], 0))
    nan = x.clone()
    nan[0] = float("nan")
    out = kernels.segment_log_softmax(nan, ptr)
    assert out[0].isnan() and not out[2:].isnan().any()  # a NaN stays in its own segment
    torch.testing.assert_close(out[-3:], want[-3:])

@pytest.mark.parametrize("T, N", [(6, 2), (1, 3), (40, 65)], ids=["closed_form", "rows", "blocked"])
def test_gae_differentiates_in_each_input_alone_on_every_scan_path(T, N):
    """A gradient wanted in reward, value or next_value alone goes through GAE's Function (the
    no-graph fast path is only for no gradient at all): the gradient equals the one taken with all
    three inputs, on the closed-form, row-by-row and blocked scans (the last two write with out=,
    which autograd cannot differentiate through)."""
    gen = torch.Generator().manual_seed(3)
    r, v, nv = (torch.rand(T, N, generator=gen, dtype=torch.float64) for _ in range(3))
    term, trunc = torch.rand(T, N, generator=gen) < 0.1, torch.rand(T, N, generator=gen) < 0.1
    w_adv, w_ret = torch.rand(T, N, generator=gen, dtype=torch.float64), torch.rand(T, N, generator=gen, dtype=torch.float64)

    def objective(*inputs):
        adv, ret = kernels.gae(*inputs, term, trunc, 0.9, 0.8)
        return (adv * w_adv).sum() + (ret * w_ret).sum()

    all_three = [x.clone().requires_grad_(True) for x in (r, v, nv)]
    grads = torch.autograd.grad(objective(*all_three), all_three)
    for i in range(3):
        inputs = [x.clone().requires_grad_(j == i) for j, x in enumerate((r, v, nv))]
        (g,) = torch.autograd.grad(objective(*inputs), [inputs[i]])
        torch.testing.assert_close(g, grads[i], rtol=1e-12, atol=1e-12)
