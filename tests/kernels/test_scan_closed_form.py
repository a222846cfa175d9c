"""The closed-form scan of small CPU inputs equals the blocked scan (NaN/inf inputs included),
and steps aside where float64 cannot hold scale^T."""

import pytest
import torch

from rlx.kernels import reference


def blocked(y, cont, scale):
    T, N = y.shape
    saved = reference._CLOSED_FORM_MAX
    reference._CLOSED_FORM_MAX = 0  # force the blocked scan
    try:
        return reference._scan_(y.clone(), cont, scale)
    finally:
        reference._CLOSED_FORM_MAX = saved


def loop(y, cont, scale):
    out, nxt = y.clone(), torch.zeros(y.shape[1], dtype=y.dtype)
    for t in range(y.shape[0] - 1, -1, -1):
        out[t] = y[t] + scale * cont[t] * nxt
        nxt = out[t]
    return out


@pytest.mark.parametrize("T,N,scale", [(128, 8, 0.99 * 0.95), (7, 3, 0.5), (300, 5, 1.0), (64, 2, 0.1)])
def test_closed_form_equals_the_loop(T, N, scale):
    g = torch.Generator().manual_seed(T)
    y, cont = torch.randn(T, N, generator=g), torch.rand(T, N, generator=g) > 0.05
    want = loop(y.double(), cont, scale).float()
    got = y.clone()
    assert reference._scan_closed_(got, cont, scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blocked(y, cont, scale), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_closed_form_spreads_nan_and_inf_like_the_blocked_scan(bad):
    y, cont = torch.randn(20, 3), torch.ones(20, 3, dtype=torch.bool)
    cont[9] = False  # episodes [0, 9] and [10, 19]
    y[15, 1] = bad
    got = y.clone()
    assert reference._scan_closed_(got, cont, 0.9)
    want = blocked(y, cont, 0.9)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite])
    assert got[16:, 1].isfinite().all()  # later steps of the column are untouched
    assert not got[:, [0, 2]].isfinite().logical_not().any()  # other columns untouched


def test_closed_form_steps_aside_out_of_float64_range():
    assert not reference._scan_closed_(torch.randn(2000, 2), torch.ones(2000, 2, dtype=torch.bool), 0.5)  # 0.5^2000
    assert not reference._scan_closed_(torch.randn(5, 2), torch.ones(5, 2, dtype=torch.bool), 0.0)
