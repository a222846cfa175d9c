"""Segment ops and scatter_add: twin vs Python loops, Triton vs twin, -inf handling, gradients."""

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlx.kernels as K
from rlx.kernels import reference
from tests.kernels import loops

REDUCTIONS = {
    "sum": K.segment_sum,
    "mean": K.segment_mean,
    "max": K.segment_max,
    "logsumexp": K.segment_logsumexp,
}
INF = math.inf


def ragged(seed, E=12, max_len=6, huge=0, F=None, dtype=torch.float32):
    """x [M] or [M, F] over random segments (empty ones included), with -inf entries, one
    all -inf segment and, if huge > 0, one segment of `huge` rows."""
    g = torch.Generator().manual_seed(seed)
    ptr = loops.ragged_ptr(g, E, max_len, huge)
    M = int(ptr[-1])
    x = torch.randn(M, *(() if F is None else (F,)), generator=g, dtype=dtype) * 3
    x[torch.rand(M, generator=g) < 0.2] = -INF
    nonempty = torch.nonzero(ptr.diff()).flatten()
    if nonempty.numel() > 1:
        e = int(nonempty[-1])
        x[ptr[e]:ptr[e + 1]] = -INF
    return x, ptr


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), F=st.sampled_from([None, 1, 3]))
def test_twin_matches_python_loops(seed, F):
    x, ptr = ragged(seed, F=F, dtype=torch.float64)
    for op, fn in [("sum", reference.segment_sum), ("mean", reference.segment_mean),
                   ("max", reference.segment_max), ("logsumexp", reference.segment_logsumexp)]:
        finite = torch.where(torch.isinf(x), 0.0, x) if op in ("sum", "mean") else x
        torch.testing.assert_close(fn(finite, ptr), loops.segment_reduce(finite, ptr, op))
    torch.testing.assert_close(reference.segment_log_softmax(x, ptr), loops.segment_log_softmax(x, ptr))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), F=st.sampled_from([None, 3]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_global_shift_path_matches_python_loops(seed, F, dtype):
    """The twin shifts by one global max when no segment underflows; segments far below it
    (40 or 300 under, per segment) must fall back to the per-segment max and still be exact."""
    g = torch.Generator().manual_seed(seed)
    ptr = loops.ragged_ptr(g, 12, 6, 0)
    M, E = int(ptr[-1]), ptr.numel() - 1
    x = torch.randn(M, *(() if F is None else (F,)), generator=g, dtype=torch.float64) * 3
    level = torch.tensor([0.0, -40.0, -300.0])[torch.randint(0, 3, (E,), generator=g)]
    x = (x + reference.expand(level, ptr, M).view(-1, *([1] * (x.dim() - 1)))).to(dtype)
    want_lse = loops.segment_reduce(x.double(), ptr, "logsumexp").to(dtype)
    want = loops.segment_log_softmax(x.double(), ptr).to(dtype)
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else {}  # fp32 ulp at |x| ~ 45: 4e-6
    torch.testing.assert_close(reference.segment_logsumexp(x, ptr), want_lse, **tol)
    torch.testing.assert_close(reference.segment_log_softmax(x, ptr), want, **tol)
    far = bool(((level == -300.0) & (ptr.diff() > 0)).any())
    underflows = far and dtype == torch.float32  # exp(-300) is 0 in float32 only
    assert (reference._global_shift(x, ptr) is None) == underflows


def test_global_shift_is_taken_only_when_safe():
    ptr = torch.tensor([0, 2, 2, 4])
    g, total = reference._global_shift(torch.tensor([0.0, 1.0, -3.0, 2.0]), ptr)  # the global max and exp sums
    assert g.tolist() == [2.0]
    torch.testing.assert_close(total, torch.tensor([math.exp(-2.0) + math.exp(-1.0), 0.0, math.exp(-5.0) + 1.0]))
    assert reference._global_shift(torch.tensor([0.0, 1.0, -100.0, -101.0]), ptr) is None  # underflow
    assert reference._global_shift(torch.tensor([0.0, 1.0, -INF, -INF]), ptr) is None  # all -inf
    assert reference._global_shift(torch.tensor([0.0, INF, 1.0, 2.0]), ptr) is None  # +inf max
    assert reference._global_shift(torch.zeros(0), torch.tensor([0, 0])) is None
    out = reference.segment_log_softmax(torch.tensor([0.0, 1.0, -100.0, -101.0]), ptr)
    torch.testing.assert_close(out, torch.tensor([-1.3132617, -0.3132617, -0.3132617, -1.3132617]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), F=st.sampled_from([None, 2]))
def test_scatter_add_twin_matches_python_loop(seed, F):
    g = torch.Generator().manual_seed(seed)
    K_rows = int(torch.randint(0, 30, (1,), generator=g))
    src = torch.randn(K_rows, *(() if F is None else (F,)), generator=g, dtype=torch.float64)
    index = torch.randint(0, 7, (K_rows,), generator=g)
    torch.testing.assert_close(reference.scatter_add(src, index, 7), loops.scatter_add(src, index, 7))


def test_ptr_helpers():
    lengths = torch.tensor([2, 0, 3, 0])
    ptr = K.lengths_to_ptr(lengths)
    assert ptr.tolist() == [0, 2, 2, 5, 5] and ptr.dtype == torch.int64
    assert K.ptr_to_segment_ids(ptr, 5).tolist() == [0, 0, 2, 2, 2]
    assert K.ptr_to_segment_ids(K.lengths_to_ptr(torch.zeros(3, dtype=torch.int64)), 0).numel() == 0


CASES = [  # (seed, E, max_len, huge, F)
    (0, 1, 0, 0, None),  # one empty segment, no rows
    (1, 20, 5, 0, None),  # many short segments
    (2, 9, 4, 40, None),  # one huge segment among short ones
    (3, 10, 6, 0, 3),  # [M, F]
    (4, 6, 3, 30, 2),
]


@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("seed,E,max_len,huge,F", CASES)
def test_triton_matches_twin(run, request, two_pass, seed, E, max_len, huge, F):
    if two_pass:
        request.getfixturevalue("small_chunks")
    x, ptr = ragged(seed, E, max_len, huge, F)
    for name, fn in [*REDUCTIONS.items(), ("log_softmax", K.segment_log_softmax)]:
        arg = torch.where(torch.isinf(x), 0.0, x) if name in ("sum", "mean") else x
        torch.testing.assert_close(run("triton", fn, arg, ptr), run("torch", fn, arg, ptr),
                                   msg=lambda m: f"{name}: {m}")
    if F is None:
        draws = [run(b, K.segment_sample, x, ptr, torch.Generator().manual_seed(seed))
                 for b in ("torch", "triton")]
        assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_minus_inf_handling(run, backend):
    ptr = torch.tensor([0, 3, 3, 5, 6])  # segments: mixed, empty, all -inf, single
    x = torch.tensor([0.0, -INF, 0.0, -INF, -INF, 2.0])
    def check(fn, arg, expected):
        torch.testing.assert_close(run(backend, fn, arg, ptr), torch.tensor(expected))

    check(K.segment_log_softmax, x, [math.log(0.5), -INF, math.log(0.5), -INF, -INF, 0.0])
    check(K.segment_logsumexp, x, [math.log(2.0), -INF, -INF, 2.0])
    check(K.segment_max, x, [0.0, -INF, -INF, 2.0])
    check(K.segment_mean, x.clamp_min(-1), [-1 / 3, 0.0, -1.0, 2.0])
    draws = run(backend, K.segment_sample, x, ptr, torch.Generator().manual_seed(0))
    assert draws[1:].tolist() == [-1, -1, 5] and draws[0] in (0, 2)
    # Gradients stay finite: 0 into -inf entries of a softmax, nothing NaN.
    leaf = x.clone().requires_grad_()
    run(backend, lambda: (K.segment_logsumexp(leaf, ptr).clamp_min(-10).sum()
                          + K.segment_log_softmax(leaf, ptr).clamp_min(-10).sum()).backward())
    assert torch.isfinite(leaf.grad).all()
    assert leaf.grad[1] == 0.0 and leaf.grad[3] == 0.0


def test_sample_follows_softmax():
    # 20k copies of one 4-way segment with a masked entry; frequencies within 4 sigma.
    logits = torch.tensor([0.0, 1.0, -INF, 2.0])
    E = 20_000
    ptr = torch.arange(E + 1) * 4
    draws = reference.segment_sample(logits.repeat(E), ptr, torch.Generator().manual_seed(0))
    local = draws - ptr[:-1]
    freq = torch.bincount(local, minlength=4).double() / E
    probs = torch.softmax(logits.double(), 0)
    assert freq[2] == 0.0
    assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / E).sqrt() + 1e-12).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("two_pass", [False, True])
def test_sample_ties_go_to_the_lowest_row(run, request, monkeypatch, backend, two_pass):
    if two_pass:
        request.getfixturevalue("small_chunks")
    constant = lambda M, device, generator: torch.full((M,), 0.5, device=device)  # noqa: E731
    monkeypatch.setattr(reference, "gumbel_noise", constant)
    monkeypatch.setattr(importlib.import_module("rlx.kernels.triton_segment"), "gumbel_noise", constant)
    logits = torch.zeros(30)
    # Segments: rows 0..4 and 5..29; rows 12 and 28 share a lane of a 16-row tile, and land in
    # different pieces when the segment is split.
    logits[[1, 3, 12, 28]] = 1.0
    ptr = torch.tensor([0, 5, 30])
    assert run(backend, K.segment_sample, logits, ptr).tolist() == [1, 12]


def _weighted(out):
    """A scalar loss with fixed, non-uniform weights on a finite copy of the output."""
    w = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).view_as(out)
    return (torch.where(torch.isinf(out), 0.0, out) * w).sum()


GRAD_OPS = {**REDUCTIONS, "log_softmax": K.segment_log_softmax}


@pytest.mark.parametrize("name", sorted(GRAD_OPS))
@pytest.mark.parametrize("two_pass", [False, True])
def test_triton_gradients_match_twin(run, request, name, two_pass):
    if two_pass:
        request.getfixturevalue("small_chunks")
    x, ptr = ragged(5, E=10, max_len=5, huge=20, F=2 if name == "mean" else None)
    x = torch.where(torch.isinf(x), 0.0, x) if name in ("sum", "mean") else x
    grads = []
    for backend in ("torch", "triton"):
        leaf = x.clone().requires_grad_()
        run(backend, lambda: _weighted(GRAD_OPS[name](leaf, ptr)).backward())
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", sorted(GRAD_OPS))
def test_gradcheck_float64(run, backend, name):
    g = torch.Generator().manual_seed(6)
    ptr = torch.tensor([0, 2, 2, 5, 6])
    x = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    finite = lambda out: torch.where(torch.isinf(out), 0.0, out)  # the empty segment gives -inf
    assert run(backend, torch.autograd.gradcheck, lambda t: finite(GRAD_OPS[name](t, ptr)), (x,))


@pytest.mark.parametrize("F", [None, 3])
def test_scatter_add_triton_matches_twin(run, F):
    g = torch.Generator().manual_seed(8)
    src = torch.randn(50, *(() if F is None else (F,)), generator=g)
    index = torch.randint(0, 9, (50,), generator=g)
    index[:5] = 4  # a hub node
    torch.testing.assert_close(run("triton", K.scatter_add, src, index, 11),
                               run("torch", K.scatter_add, src, index, 11))
    assert run("triton", K.scatter_add, src[:0], index[:0], 3).eq(0).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_scatter_add_gradients(run, backend):
    index = torch.tensor([2, 0, 2, 1])
    src = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert run(backend, torch.autograd.gradcheck, lambda s: K.scatter_add(s, index, 3), (src,))


def test_rejects_bad_ptr():
    x = torch.zeros(5)
    with pytest.raises(ValueError, match="ptr must rise from 0 to M = 5"):
        K.segment_sum(x, torch.tensor([0, 3, 4]))
    with pytest.raises(ValueError, match="ptr must rise"):
        K.segment_sum(x, torch.tensor([0, 3, 2, 5]))
    with pytest.raises(ValueError, match="1-D logits"):
        K.segment_sample(torch.zeros(5, 2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="index must be 1-D integer"):
        K.scatter_add(x, torch.zeros(4, dtype=torch.int64), 3)
