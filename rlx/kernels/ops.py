"""The public `rlx.kernels` ops: check arguments, then run Triton or the torch twin.

Which one runs is decided per call by `rlx.kernels.dispatch`. Both give the same results (up to
float rounding and the order of fp32 atomics in scatter_add) and the same gradients.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from rlx.kernels import reference
from rlx.kernels.dispatch import use_triton
from rlx.kernels.layout import checking, layout

Tensor = torch.Tensor
_DONE_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64)


def _triton(name: str, tensor: Tensor) -> ModuleType:
    """The Triton module `rlx.kernels.<name>`, imported on first use so that TRITON_INTERPRET
    is read then rather than at `import rlx.kernels`."""
    module = importlib.import_module(f"rlx.kernels.{name}")
    if not tensor.is_cuda and not module.INTERPRETED:
        raise RuntimeError(
            f"rlx.kernels.{name} cannot run on CPU tensors: triton was imported without "
            "TRITON_INTERPRET=1; set it in the environment before starting Python (or before anything "
            "imports triton or tensordict)"
        )
    return module


def _time_major(floats: dict[str, Tensor], dones: dict[str, Tensor]) -> torch.dtype:
    """Check [T, N] time-major arguments; return the common float dtype of `floats` (one pass,
    no tensor op: this runs on every call, and PPO's rollouts are small)."""
    first = next(iter(floats.values()))
    shape, device, dtype = first.shape, first.device, first.dtype
    if len(shape) != 2:
        raise ValueError(f"expected time-major [T, N] tensors, got shape {tuple(shape)}")
    for group, is_float in ((floats, True), (dones, False)):
        for name, t in group.items():
            if t.shape != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            if t.device != device:
                raise ValueError(f"{name} is on {t.device}, expected {device}")
            if is_float:
                if not t.is_floating_point():
                    raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
                if t.dtype != dtype:
                    dtype = torch.promote_types(dtype, t.dtype)
            elif not (t.dtype in _DONE_DTYPES or t.is_floating_point()):
                raise TypeError(f"{name} must be bool, integer or float, got {t.dtype}")
    return dtype


def _segments(x: Tensor, ptr: Tensor) -> Tensor:
    """Check x [M, ...] against CSR offsets; return ptr as int64. The offsets' values (ptr[0] = 0,
    ptr[-1] = M, monotone) are checked once per ptr tensor (`rlx.kernels.layout`): always on CPU,
    on CUDA only under RLX_CHECK=1 (there a check costs a device sync)."""
    if ptr.dim() != 1 or ptr.numel() < 1 or ptr.is_floating_point():
        raise ValueError(f"ptr must be 1-D integer offsets with E + 1 >= 1 entries, got {ptr.dtype} {tuple(ptr.shape)}")
    if x.dim() < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [M, ...], got {x.dtype} {tuple(x.shape)}")
    if ptr.device != x.device:
        raise ValueError(f"ptr is on {ptr.device} but x is on {x.device}")
    if ptr.is_cuda and not checking():
        return ptr.long()
    return layout(ptr, x.shape[0]).ptr


def gae(reward: Tensor, value: Tensor, next_value: Tensor, terminated: Tensor,
        truncated: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) on [T, N] rollouts.

    `delta_t = r_t + gamma * (1 - term_t) * V(s'_t) - V(s_t)` with `next_value[t] = V(s'_t)` the
    value of step t's real next observation, and
    `adv_t = delta_t + gamma * lam * (1 - done_t) * adv_{t+1}`, `done = term | trunc`,
    `adv_T = 0`; `ret = adv + value`. A truncated step bootstraps from next_value, a terminated
    one does not (its next_value is never read). Dones may be bool, integer or float (nonzero =
    true). Differentiable in reward, value and next_value.
    """
    dtype = _time_major(dict(reward=reward, value=value, next_value=next_value),
                        dict(terminated=terminated, truncated=truncated))
    if not reward.dtype == value.dtype == next_value.dtype == dtype:
        reward, value, next_value = reward.to(dtype), value.to(dtype), next_value.to(dtype)
    args = (reward, value, next_value, terminated, truncated, float(gamma), float(lam))
    if use_triton(value):
        return _triton("triton_gae", value).GAE.apply(*args)
    return reference.gae(*args)


def lambda_returns(reward: Tensor, next_value: Tensor, terminated: Tensor, truncated: Tensor,
                   gamma: float, lam: float) -> Tensor:
    """TD(lambda) returns on [T, N] rollouts.

    `G_t = r_t + gamma * (1 - term_t) * ((1 - lam) * next_value_t + lam * G_{t+1})`, where at a
    done step (`term | trunc`) and at the last step `G_{t+1}` is replaced by `next_value_t`.
    Differentiable in reward and next_value.
    """
    dtype = _time_major(dict(reward=reward, next_value=next_value),
                        dict(terminated=terminated, truncated=truncated))
    args = (reward.to(dtype), next_value.to(dtype), terminated, truncated, float(gamma), float(lam))
    if use_triton(next_value):
        return _triton("triton_gae", next_value).LambdaReturns.apply(*args)
    return reference.lambda_returns(*args)


def discount_cumsum(x: Tensor, gamma: float, mask: Tensor | None = None,
                    lengths: Tensor | None = None) -> Tensor:
    """Discounted reverse cumsum per column of x [T, N] (e.g. T tokens of N sequences).

    `y_t = valid_t * (x_t + gamma * y_{t+1})`, `y_T = 0`: the sum restarts after every invalid
    step and invalid steps output 0. Valid steps are `mask` [T, N] (bool) or the prefix
    `t < lengths[n]` ([N] integer), or all steps if neither is given. Differentiable in x.
    """
    if mask is not None and lengths is not None:
        raise ValueError("give mask or lengths, not both")
    _time_major(dict(x=x), {} if mask is None else dict(mask=mask))
    if lengths is not None and lengths.shape != (x.shape[1],):
        raise ValueError(f"lengths must be [N] = [{x.shape[1]}], got {tuple(lengths.shape)}")
    if use_triton(x):
        return _triton("triton_gae", x).DiscountCumsum.apply(x, float(gamma), mask, lengths)
    return reference.discount_cumsum(x, float(gamma), mask=mask, lengths=lengths)


def lengths_to_ptr(lengths: Tensor) -> Tensor:
    """CSR offsets [E + 1] (int64, ptr[0] = 0) from segment lengths [E]."""
    return reference.lengths_to_ptr(lengths)


def ptr_to_segment_ids(ptr: Tensor, M: int) -> Tensor:
    """Segment id of every row [M] (int64) from CSR offsets [E + 1]."""
    return reference.ptr_to_segment_ids(ptr.long(), M)


def segment_sum(x: Tensor, ptr: Tensor) -> Tensor:
    """`out[e] = sum_{ptr[e] <= i < ptr[e+1]} x[i]` over dim 0 of x [M] or [M, F]; 0 if empty."""
    ptr = _segments(x, ptr)
    if use_triton(x):
        return _triton("triton_segment", x).SegmentSum.apply(x, ptr)
    return reference.segment_sum(x, ptr)


def segment_mean(x: Tensor, ptr: Tensor) -> Tensor:
    """Mean of each segment's rows of x [M] or [M, F]; 0 for empty segments."""
    ptr = _segments(x, ptr)
    if use_triton(x):
        return _triton("triton_segment", x).SegmentMean.apply(x, ptr)
    return reference.segment_mean(x, ptr)


def segment_max(x: Tensor, ptr: Tensor) -> Tensor:
    """Max of each segment's rows of x [M] or [M, F]; -inf for empty segments. The gradient is
    split evenly among tied maxima."""
    ptr = _segments(x, ptr)
    if use_triton(x):
        return _triton("triton_segment", x).SegmentMax.apply(x, ptr)
    return reference.segment_max(x, ptr)


def segment_logsumexp(x: Tensor, ptr: Tensor) -> Tensor:
    """`out[e] = log sum_i exp x[i]` per segment of x [M] or [M, F]; -inf for empty or all -inf
    segments. Gradient: the segment softmax (0, not NaN, for all -inf segments)."""
    ptr = _segments(x, ptr)
    if use_triton(x):
        return _triton("triton_segment", x).SegmentLogsumexp.apply(x, ptr)
    return reference.segment_logsumexp(x, ptr)


def segment_log_softmax(x: Tensor, ptr: Tensor) -> Tensor:
    """`out[i] = x[i] - logsumexp(x[segment of i])` for x [M] (or [M, F], per column).

    -inf entries (masked actions) stay -inf; a segment of only -inf stays -inf, never NaN.
    """
    ptr = _segments(x, ptr)
    if use_triton(x):
        return _triton("triton_segment", x).SegmentLogSoftmax.apply(x, ptr)
    return reference.segment_log_softmax(x, ptr)


def segment_sample(logits: Tensor, ptr: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    """One categorical draw per segment of 1-D logits [M], by Gumbel-max.

    Returns int64 [E]: the *global* row index of the draw into logits, -1 for empty or all -inf
    segments. Randomness is one float32 uniform per row from `generator` (same draws on both
    backends). Not differentiable.
    """
    if logits.dim() != 1:
        raise ValueError(f"segment_sample takes 1-D logits [M], got shape {tuple(logits.shape)}")
    ptr = _segments(logits, ptr)
    if use_triton(logits):
        return _triton("triton_segment", logits).segment_sample(logits, ptr, generator)
    return reference.segment_sample(logits, ptr, generator)


def scatter_add(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """`out[j] = sum_{k: index[k] = j} src[k]` for src [K] or [K, F], index [K] in
    [0, dim_size) unsorted; out is [dim_size, ...]. Out-of-range indices raise on the torch
    path and are dropped by the Triton path. The Triton path sums with atomics, so the fp32
    summation order (and the last bits) can vary between runs."""
    if index.dim() != 1 or index.is_floating_point() or index.shape[0] != src.shape[0]:
        raise ValueError(f"index must be 1-D integer [K] = [{src.shape[0]}], got {index.dtype} {tuple(index.shape)}")
    if not src.is_floating_point():
        raise TypeError(f"src must be a float tensor, got {src.dtype}")
    if index.device != src.device:
        raise ValueError(f"index is on {index.device} but src is on {src.device}")
    if use_triton(src):
        return _triton("triton_segment", src).ScatterAdd.apply(src, index, int(dim_size))
    return reference.scatter_add(src, index, int(dim_size))
