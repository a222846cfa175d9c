"""Every path of the reference scan `y_t <- x_t + scale * cont_t * y_{t+1}` against a plain loop:
the closed form (small CPU inputs), the blocked two-sweep scan (wide inputs, N > 64 columns), the
row-by-row path (one chunk), and the blocked fallback when scale^T leaves float64's range. The
shapes are ragged (T not a multiple of the chunk length, leftover rows) and breaks are random."""

import pytest
import torch

from rlx.kernels import reference as ref


def naive(x: torch.Tensor, cont: torch.Tensor, scale: float) -> torch.Tensor:
    y = x.clone().double()
    for t in range(x.shape[0] - 2, -1, -1):
        y[t] = y[t] + scale * cont[t].double() * y[t + 1]
    return y


def case(T, N, seed, p_break=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, generator=g, dtype=torch.float64)
    cont = torch.rand(T, N, generator=g) > p_break
    return x, cont


@pytest.mark.parametrize("T,N", [(37, 65), (50, 70), (129, 66), (7, 80), (2, 65), (3, 100)])
@pytest.mark.parametrize("scale", [0.99, 0.5, 1.0])
def test_blocked_scan_matches_the_loop_on_wide_inputs(T, N, scale):
    x, cont = case(T, N, seed=T * 1000 + N)
    # the scan's own convention: cont_t multiplies y_{t+1}; the last row has nothing after it
    y = ref._scan_(x.clone(), cont, scale)
    torch.testing.assert_close(y, naive(x, cont, scale), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T,N", [(1, 3), (2, 1), (17, 5), (128, 8), (300, 2)])
def test_closed_form_matches_the_loop_and_the_blocked_scan(T, N):
    x, cont = case(T, N, seed=T + N)
    y = x.clone()
    assert ref._scan_closed_(y, cont, 0.97) is True
    torch.testing.assert_close(y, naive(x, cont, 0.97), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ref._scan_(x.clone(), cont, 0.97), naive(x, cont, 0.97), rtol=1e-10, atol=1e-10)


def test_closed_form_declines_out_of_range_tables_and_the_scan_falls_back():
    x, cont = case(400, 4, seed=3)
    y = x.clone()
    assert ref._closed_form_tables(400, 0.01) is None and ref._closed_form_tables(10, 0.0) is None
    assert ref._scan_closed_(y, cont, 0.01) is False and torch.equal(y, x)  # untouched when declined
    torch.testing.assert_close(ref._scan_(x.clone(), cont, 0.01), naive(x, cont, 0.01), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ref._scan_(x.clone(), cont, 0.0), x)  # scale 0: y = x


def test_rows_path_writes_every_row_from_the_given_successor():
    x, cont = case(6, 3, seed=5, p_break=0.0)
    y = x.clone()
    nxt = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    ref._rows_(y, cont, 0.5, 4, nxt)  # rows 3..0 from nxt; rows 4, 5 untouched
    expect = x.clone()
    expect[3] = x[3] + 0.5 * nxt
    for t in (2, 1, 0):
        expect[t] = x[t] + 0.5 * expect[t + 1]
    torch.testing.assert_close(y, expect)


@pytest.mark.parametrize("T", [5, 12, 49, 50, 301])
def test_chunking_covers_every_row(T):
    B, C, r = ref._chunking(T)
    assert B >= 1 and C == T // B and r == T % B and B * C + r == T
    assert 3 * B + C + r == min(3 * b + T // b + T % b for b in range(1, 2 * int(T ** 0.5) + 2))

