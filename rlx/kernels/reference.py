"""Plain-torch twins of the `rlx.kernels` ops, and the CPU path: vectorized, no per-element Python.

Arguments arrive validated from `rlx.kernels.ops` (shapes, dtypes, ptr layout); see the docstrings
there for the full semantics. Every op here is differentiable with torch autograd in its float
inputs. fp16/bf16 inputs are computed in fp32 and returned in their own dtype.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

_NEG_INF = float("-inf")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ops accumulate in: fp32 for half types, the dtype itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---------------------------------------------------------------------------------------------
# Time-major recurrences: y_t = x_t + c_t * y_{t+1}, T steps x N columns.
# ---------------------------------------------------------------------------------------------


def _scan(x: torch.Tensor, c: torch.Tensor, reverse: bool) -> torch.Tensor:
    """`y_t = x_t + c_t * y_{t+1}` (reverse) or `y_t = x_t + c_t * y_{t-1}` (forward) over dim 0.

    y is 0 beyond either end. Two-level blocked scan: T is cut into C chunks of B ~ sqrt(T)
    steps; a B-step loop scans all chunks at once with zero carry-in while tracking each step's
    gain (the product of c back to the chunk's entry), a C-step loop chains the chunk entries,
    and one fused multiply-add applies them: 2B + C vector ops instead of T.
    """
    T, N = x.shape
    if T == 0:
        return x.clone()
    B = math.isqrt(T - 1) + 1  # ceil(sqrt(T))
    C = -(-T // B)
    pad = C * B - T
    if pad:  # zero rows where the scan starts: they yield y = 0 and leave the real rows exact
        zeros = x.new_zeros(pad, N)
        x = torch.cat([x, zeros] if reverse else [zeros, x])
        c = torch.cat([c, zeros] if reverse else [zeros, c])
    xs, cs = x.view(C, B, N), c.view(C, B, N)  # [C chunks, B steps, N]
    local, gain = torch.empty_like(xs), torch.empty_like(cs)
    order = range(B - 1, -1, -1) if reverse else range(B)
    local[:, order[0]] = xs[:, order[0]]
    gain[:, order[0]] = cs[:, order[0]]
    for b in order[1:]:
        prev = b + 1 if reverse else b - 1
        torch.addcmul(xs[:, b], cs[:, b], local[:, prev], out=local[:, b])
        torch.mul(cs[:, b], gain[:, prev], out=gain[:, b])
    entry = x.new_zeros(C + 1, N)  # [C + 1, N]: y flowing into each chunk, 0 at the far end
    if reverse:
        for k in range(C - 1, -1, -1):
            torch.addcmul(local[k, 0], gain[k, 0], entry[k + 1], out=entry[k])
        incoming = entry[1:]
    else:
        for k in range(C):
            torch.addcmul(local[k, B - 1], gain[k, B - 1], entry[k], out=entry[k + 1])
        incoming = entry[:-1]
    y = local.addcmul_(gain, incoming.unsqueeze(1)).view(C * B, N)  # [C * B, N]
    return y[:T] if reverse else y[pad:]


class _LinearScan(torch.autograd.Function):
    """`y_t = x_t + c_t * y_{t+1}`, y_T = 0, differentiable in x (c is a constant)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(c)
        return _scan(x.contiguous(), c.contiguous(), reverse=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (c,) = ctx.saved_tensors
        # Adjoint: dL/dx_t = g_t + c_{t-1} dL/dx_{t-1}, a forward scan with c moved one step later.
        c_prev = torch.cat([c.new_zeros(1, c.shape[1]), c[:-1]])  # [T, N]
        return _scan(grad.contiguous(), c_prev, reverse=False), None


def linear_scan(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Reverse affine scan over dim 0 of [T, N]: `y_t = x_t + c_t * y_{t+1}`, `y_T = 0`."""
    return _LinearScan.apply(x, c)


def gae(reward, value, next_value, terminated, truncated, gamma: float, lam: float):
    """GAE: `adv_t = delta_t + gamma*lam*(1-done_t)*adv_{t+1}`, `ret = adv + value` ([T, N])."""
    dtype = value.dtype
    acc = acc_dtype(dtype)
    reward, value, next_value = reward.to(acc), value.to(acc), next_value.to(acc)
    term = terminated.bool()
    done = term | truncated.bool()
    # next_value of a terminated step is never read (it may be garbage or NaN).
    delta = reward + gamma * torch.where(term, 0.0, next_value) - value
    adv = linear_scan(delta, (~done).to(acc) * (gamma * lam))
    return adv.to(dtype), (adv + value).to(dtype)


def lambda_returns(reward, next_value, terminated, truncated, gamma: float, lam: float):
    """TD(lambda): `G_t = r_t + gamma*(1-term_t)*((1-lam)*nv_t + lam*G_{t+1})` ([T, N]).

    At a done step and at the last step `G_{t+1}` is replaced by `nv_t`, so with
    `cont_t = 1 - done_t` (and cont = 0 on the last row) this is the reverse scan
    `G_t = b_t + gamma*lam*cont_t*G_{t+1}`, `b_t = r_t + gamma*(1-term_t)*nv_t*(1 - lam*cont_t)`.
    """
    dtype = next_value.dtype
    acc = acc_dtype(dtype)
    reward, next_value = reward.to(acc), next_value.to(acc)
    term = terminated.bool()
    cont = ~(term | truncated.bool())
    cont[-1] = False
    cont_f = cont.to(acc)
    b = reward + gamma * torch.where(term, 0.0, next_value) * (1.0 - lam * cont_f)
    return linear_scan(b, cont_f * (gamma * lam)).to(dtype)


def valid_steps(shape: torch.Size, mask, lengths, device) -> torch.Tensor | None:
    """Bool [T, N] of valid steps from a `mask` or per-column prefix `lengths`; None if neither."""
    if mask is not None:
        return mask.bool()
    if lengths is not None:
        steps = torch.arange(shape[0], device=device)  # [T]
        return steps[:, None] < lengths[None, :]  # [T, N]
    return None


def discount_cumsum(x, gamma: float, mask=None, lengths=None):
    """`y_t = valid_t * (x_t + gamma * y_{t+1})` over dim 0 of [T, N]; invalid steps give 0."""
    dtype = x.dtype
    acc = acc_dtype(dtype)
    x = x.to(acc)
    valid = valid_steps(x.shape, mask, lengths, x.device)
    if valid is None:
        return linear_scan(x, torch.full_like(x, gamma)).to(dtype)
    return linear_scan(torch.where(valid, x, 0.0), valid.to(acc) * gamma).to(dtype)


# ---------------------------------------------------------------------------------------------
# Segments over CSR offsets ptr (E + 1 entries, ptr[0] = 0, ptr[-1] = M); reduce over dim 0.
# ---------------------------------------------------------------------------------------------


def lengths_to_ptr(lengths: torch.Tensor) -> torch.Tensor:
    """CSR offsets [E + 1] from segment lengths [E]: `ptr[0] = 0`, `ptr[e+1] = ptr[e] + lengths[e]`."""
    ptr = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=ptr[1:])
    return ptr


def ptr_to_segment_ids(ptr: torch.Tensor, M: int) -> torch.Tensor:
    """Segment id of every row [M]: row i belongs to e with `ptr[e] <= i < ptr[e+1]`."""
    segments = torch.arange(ptr.numel() - 1, device=ptr.device)
    return segments.repeat_interleave(ptr.diff(), output_size=M)


def expand(values: torch.Tensor, ptr: torch.Tensor, M: int) -> torch.Tensor:
    """Repeat each segment's row of `values` [E, ...] over its rows: [M, ...]."""
    return values.repeat_interleave(ptr.diff(), dim=0, output_size=M)


def _per_segment(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shape a per-segment vector [E] to broadcast against segment results [E, *x.shape[1:]]."""
    return values.view(-1, *([1] * (x.dim() - 1)))


def segment_sum(x, ptr):
    """`out[e] = sum_{ptr[e] <= i < ptr[e+1]} x[i]`; 0 for empty segments."""
    return torch.segment_reduce(x.to(acc_dtype(x.dtype)), "sum", offsets=ptr).to(x.dtype)


def segment_mean(x, ptr):
    """Segment sum over the segment length; 0 for empty segments."""
    total = torch.segment_reduce(x.to(acc_dtype(x.dtype)), "sum", offsets=ptr)
    count = _per_segment(ptr.diff().clamp_min(1), x)
    return (total / count).to(x.dtype)


def segment_max(x, ptr):
    """`out[e] = max x[ptr[e]:ptr[e+1]]`; -inf for empty segments. Gradient split among ties."""
    return torch.segment_reduce(x, "max", offsets=ptr)


def _finite_max(x, ptr):
    """Segment max with 0 where it is not finite (empty / all -inf), detached: a safe exp shift."""
    top = segment_max(x.detach(), ptr)
    return torch.where(torch.isfinite(top), top, 0.0)


def segment_logsumexp(x, ptr):
    """`out[e] = log sum exp x[ptr[e]:ptr[e+1]]`; -inf for empty or all -inf segments.

    Shifted by the detached segment max, so the gradient is exactly softmax(x) per segment
    (0 for all -inf segments, never NaN).
    """
    dtype = x.dtype
    x = x.to(acc_dtype(dtype))
    shift = _finite_max(x, ptr)  # [E, ...]
    total = segment_sum(torch.exp(x - expand(shift, ptr, x.shape[0])), ptr)
    positive = total > 0
    lse = torch.log(torch.where(positive, total, 1.0)) + shift
    return torch.where(positive, lse, _NEG_INF).to(dtype)


def segment_log_softmax(x, ptr):
    """`out[i] = x[i] - logsumexp(segment of i)`; -inf entries stay -inf, all -inf gives -inf."""
    dtype = x.dtype
    x = x.to(acc_dtype(dtype))
    M = x.shape[0]
    shifted = x - expand(_finite_max(x, ptr), ptr, M)
    total = segment_sum(torch.exp(shifted), ptr)
    # log(1) = 0 where a segment has no mass: its entries are all -inf and stay -inf.
    log_total = torch.log(torch.where(total > 0, total, 1.0))
    return shifted.sub_(expand(log_total, ptr, M)).to(dtype)


def gumbel_noise(M: int, device, generator) -> torch.Tensor:
    """One float32 uniform per row from `generator`, the only randomness of `segment_sample`."""
    return torch.rand(M, generator=generator, device=device, dtype=torch.float32)


def segment_sample(logits, ptr, generator=None):
    """Gumbel-max: `argmax_i (logits[i] - log(-log u_i))` per segment, as a global row index.

    -1 for empty or all -inf segments; ties go to the lowest row.
    """
    M = logits.shape[0]
    u = gumbel_noise(M, logits.device, generator)
    scores = logits.detach().float() - torch.log(-torch.log(u))
    best = segment_max(scores, ptr)  # [E]
    hit = scores == expand(best, ptr, M)
    # Row numbers as float64 (exact below 2**53) because segment_reduce has no integer min.
    rows = torch.arange(M, device=logits.device, dtype=torch.float64)
    first = torch.segment_reduce(torch.where(hit, rows, math.inf), "min", offsets=ptr)
    return torch.where(best > _NEG_INF, first, -1.0).long()


def scatter_add(src, index, dim_size: int):
    """`out[j] = sum_{k: index[k] = j} src[k]`, out of shape [dim_size, *src.shape[1:]]."""
    acc = acc_dtype(src.dtype)
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=acc, device=src.device)
    return out.index_add_(0, index, src.to(acc)).to(src.dtype)
