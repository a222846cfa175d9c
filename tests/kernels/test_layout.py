"""The checked ptr layout: built once per ptr tensor, rebuilt when ptr changes, and the sparse sums
it enables agree with torch.segment_reduce (values and gradients)."""

import pytest
import torch

import rlx.kernels as K
from rlx.kernels import layout as L
from rlx.kernels import reference


@pytest.fixture
def builds(monkeypatch):
    """Count Layout constructions (each one is a check of ptr's values)."""
    count = []
    init = L.Layout.__init__

    def counting(self, ptr, M):
        count.append(M)
        init(self, ptr, M)

    monkeypatch.setattr(L.Layout, "__init__", counting)
    return count


def test_ptr_is_checked_once_across_ops_and_backward(builds):
    ptr = torch.tensor([0, 2, 2, 5])
    x = torch.randn(5, requires_grad=True)
    for _ in range(3):
        (K.segment_sum(x, ptr).sum() + K.segment_log_softmax(x, ptr).sum() + K.segment_logsumexp(x, ptr).sum()
         + K.segment_mean(x, ptr).sum()).backward()
    assert builds == [5]


def test_int32_ptr_is_checked_once(builds):
    ptr = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    for _ in range(3):
        K.segment_log_softmax(torch.randn(5), ptr)
    assert builds == [5]


def test_in_place_change_or_other_m_is_checked_again(builds):
    ptr = torch.tensor([0, 2, 5])
    K.segment_sum(torch.zeros(5), ptr)
    ptr[1] = 6  # same tensor, new version
    with pytest.raises(ValueError, match="ptr must rise"):
        K.segment_sum(torch.zeros(5), ptr)
    ptr[1] = 2
    assert K.segment_sum(torch.ones(5), ptr).tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="ptr must rise from 0 to M = 4"):
        K.segment_sum(torch.zeros(4), ptr)
    K.segment_sum(torch.ones(5), ptr)  # the good layout is still cached
    assert builds == [5, 5, 5, 4]  # first use, bad version, good version again, other M


def test_inference_tensors_are_checked_every_call(builds):
    with torch.inference_mode():
        ptr = torch.tensor([0, 2, 5])
        K.segment_sum(torch.zeros(5), ptr)
        K.segment_sum(torch.zeros(5), ptr)
    assert builds == [5] * 4  # no version counter to key on: the op and its twin check, every call


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("F", [None, 1, 3])
def test_sparse_sums_match_segment_reduce(dtype, F):
    g = torch.Generator().manual_seed(0)
    ptr = K.lengths_to_ptr(torch.randint(0, 6, (200,), generator=g))
    M = int(ptr[-1])
    x = torch.randn(M, *(() if F is None else (F,)), generator=g, dtype=dtype, requires_grad=True)
    assert L.layout(ptr, M).sums(dtype) is not None  # the sparse path is the one under test
    out = K.segment_sum(x, ptr)
    want = torch.segment_reduce(x.detach(), "sum", offsets=ptr)
    torch.testing.assert_close(out.detach(), want)
    w = torch.randn(out.shape, generator=g, dtype=dtype)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(grad, reference.expand(w, ptr, M))


def test_segment_reduce_serves_where_the_sparse_sum_does_not():
    ptr = torch.tensor([0, 2, 5])
    lay = L.layout(ptr, 5)
    assert lay.sums(torch.float16) is None and L.layout(torch.tensor([0]), 0).sums(torch.float32) is None
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.bfloat16)
    assert K.segment_sum(x, ptr).tolist() == [3.0, 12.0]

