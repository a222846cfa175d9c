"""Fused numerics for RL: returns/advantages over [T, N] rollouts and segment ops over CSR data.

Every op runs a Triton kernel on CUDA tensors and a vectorized torch twin elsewhere (see
`rlx.kernels.dispatch` and docs/kernels.md). The Triton kernels are the submodules
`triton_gae` (time ops) and `triton_segment` (segment ops), imported only on the first Triton call.
"""

from rlx.kernels.dispatch import get_backend, set_backend
from rlx.kernels.ops import (
    discount_cumsum,
    gae,
    lambda_returns,
    lengths_to_ptr,
    ptr_to_segment_ids,
    scatter_add,
    segment_log_softmax,
    segment_logsumexp,
    segment_max,
    segment_mean,
    segment_sample,
    segment_sum,
)

__all__ = [
    "discount_cumsum",
    "gae",
    "get_backend",
    "lambda_returns",
    "lengths_to_ptr",
    "ptr_to_segment_ids",
    "scatter_add",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_max",
    "segment_mean",
    "segment_sample",
    "segment_sum",
    "set_backend",
]
