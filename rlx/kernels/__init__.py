"""Fused numerics for RL: returns/advantages over [T, N] rollouts and segment ops over CSR data.

Every op runs a Triton kernel on CUDA tensors and a vectorized torch twin elsewhere (see
`rlx.kernels.dispatch` and docs/kernels.md). Triton is imported only on the first Triton call.
"""

import sys
import types

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


class _Package(types.ModuleType):
    """`gae` names both a public function and the Triton submodule `rlx.kernels.gae`; importing
    the submodule would rebind the package attribute to the module, so the function is kept.
    (Reach the submodule with `from rlx.kernels.gae import ...` or `importlib`.)"""

    def __setattr__(self, name, value):
        if not (name == "gae" and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
