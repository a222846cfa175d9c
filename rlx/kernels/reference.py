"""Plain-torch twins of the `rlx.kernels` ops, and the CPU path: vectorized, no per-element Python.

Arguments arrive validated from `rlx.kernels.ops` (shapes, dtypes, ptr layout); see the docstrings
there for the full semantics. Every op is differentiable in its float inputs: the time-major ones
through small autograd Functions (their backward is the adjoint scan, also used by the Triton
path), segment sums and log-softmax through small Functions over the cached `rlx.kernels.layout`
of ptr (sums are one sparse [E, M] product on CPU), the rest through torch autograd. fp16/bf16
inputs are computed in fp32 and returned in their own dtype.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

from rlx.kernels.layout import Layout, layout

_NEG_INF = float("-inf")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ops accumulate in: fp32 for half types, the dtype itself otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`, without a call when it already is (the common fp32 case)."""
    return x if x.dtype == dtype else x.to(dtype)


# ---------------------------------------------------------------------------------------------
# Time-major recurrences on [T, N]: y_t = x_t + scale * cont_t * y_{t+1}, cont a bool mask.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _chunking(T: int) -> tuple[int, int, int]:
    """Chunk length B, chunk count C and leftover rows r = T - C*B minimising the op count
    3B + C + r of `_scan_` (B ~ sqrt(T / 3))."""
    best = min(range(1, 2 * math.isqrt(T) + 2), key=lambda B: 3 * B + T // B + T % B)
    return best, T // best, T % best


def _rows_(y, cont, scale, stop, nxt):
    """Row-by-row `y_t += scale * cont_t * nxt` for t = stop - 1 down to 0, nxt = y_{t+1}."""
    for t in range(stop - 1, -1, -1):
        torch.addcmul(y[t], cont[t], nxt, value=scale, out=y[t])
        nxt = y[t]


# `_scan_` takes the closed form on CPU for T * N <= _CLOSED_FORM_MAX and N <= _CLOSED_FORM_COLS: its
# float64 passes cost ~T * N, the blocked scan's ~sqrt(T) ops ~N each (measured crossovers: closed
# 35 vs 218 us at [128, 8], 186 vs 322 at [256, 64], 615 vs 260 at [128, 256]; scripts/bench_gae.py)
_CLOSED_FORM_MAX, _CLOSED_FORM_COLS = 1 << 16, 64


@functools.lru_cache(maxsize=64)
def _closed_form_tables(T: int, scale: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale^t [T, 1] float64, t [T, 1] int64) for `_scan_closed_`, or None where scale^T
    would leave float64's range (or scale <= 0)."""
    if scale <= 0.0 or abs(T * math.log(scale)) > 600.0:
        return None
    steps = torch.arange(T)
    return torch.pow(torch.tensor(scale, dtype=torch.float64), steps.double())[:, None], steps[:, None]


def _scan_closed_(y: torch.Tensor, cont: torch.Tensor, scale: float) -> bool:
    """`_scan_` in a fixed dozen vector ops whatever T (small CPU rollouts: the blocked scan
    costs 3B + C + r ops of per-call overhead). With w_t = scale^t and e(t) the first step at
    or after t whose `cont` is false (else T - 1),
    `y_t = w_t^-1 sum_{s=t}^{e(t)} w_s x_s = (S_t - S_{e(t)+1}) / w_t`, S the reverse cumsum of
    w x, in float64 (errors stay ~T eps64 / (1 - scale) relative). A NaN/inf in x spreads to
    the earlier steps of its column exactly as in the blocked scan (whose `0 * NaN` at a break
    is NaN too). Returns False, y untouched, when the tables would leave float64's range, so
    the caller runs the blocked scan instead."""
    T, N = y.shape
    tables = _closed_form_tables(T, float(scale))
    if tables is None:
        return False
    w, steps = tables
    rev = torch.cumsum((y.double() * w).flip(0), 0)  # reversed: rev[T-1-t] = sum_{s>=t} w_s x_s
    S = torch.cat([rev.flip(0), rev.new_zeros(1, N)])  # [T + 1, N], S_T = 0
    stop = torch.where(cont, T - 1, steps).flip(0)  # [T, N] reversed: break positions, else T - 1
    end = torch.cummin(stop, 0).values.flip(0)  # e(t)
    y.copy_((S[:T] - S.gather(0, end + 1)) / w)
    return True


def _scan_(y: torch.Tensor, cont: torch.Tensor, scale: float) -> torch.Tensor:
    """In place over dim 0 of y [T, N]: `y_t <- y_t + scale * cont_t * y_{t+1}`, `y_T = 0`.

    Small CPU inputs (see `_CLOSED_FORM_MAX`) take the closed form `_scan_closed_`.

    Two-sweep blocked scan, 3B + C + r vector ops instead of T: rows r.. are C chunks of B steps.
    Sweep 1 folds every chunk at once into its affine map `entry = acc + gain * exit`
    ([C, N] accumulators, nothing written to y); a C-step loop chains the chunks from the end;
    sweep 2 rescans every chunk from its true exit value, writing y; the r leftover first rows
    go row by row. y is read twice and written once, and nothing of size [T, N] is allocated.
    """
    T, N = y.shape
    if (y.device.type == "cpu" and T * N <= _CLOSED_FORM_MAX and N <= _CLOSED_FORM_COLS and T > 1
            and _scan_closed_(y, cont, scale)):
        return y
    B, C, r = _chunking(T)
    if C <= 1 or B == 1:
        _rows_(y, cont, scale, T, y.new_zeros(N))
        return y
    ys, cs = y[r:].view(C, B, N), cont[r:].view(C, B, N)  # [C chunks, B steps, N]
    acc, alive = ys[:, B - 1].clone(), cs[:, B - 1].clone()  # [C, N]
    for b in range(B - 2, -1, -1):
        torch.addcmul(ys[:, b], cs[:, b], acc, value=scale, out=acc)
        alive &= cs[:, b]
    gain = alive.to(y.dtype).mul_(scale**B)  # [C, N]: product of scale * cont over the chunk
    exits = y.new_zeros(C + 1, N)  # [C + 1, N]: y just after chunk k is exits[k + 1]
    for k in range(C - 1, -1, -1):
        torch.addcmul(acc[k], gain[k], exits[k + 1], out=exits[k])
    nxt = exits[1:]  # [C, N]
    for b in range(B - 1, -1, -1):
        torch.addcmul(ys[:, b], cs[:, b], nxt, value=scale, out=ys[:, b])
        nxt = ys[:, b]
    _rows_(y, cont, scale, r, y[r])
    return y


def adjoint_scan(grad: torch.Tensor, cont: torch.Tensor, scale: float) -> torch.Tensor:
    """dL/dx of `y_t = x_t + scale * cont_t * y_{t+1}` given dL/dy:
    `g_t = grad_t + scale * cont_{t-1} * g_{t-1}`, a forward scan, run as a reverse one on flips."""
    cont_prev = torch.cat([cont.flip(0)[1:], cont.new_zeros(1, cont.shape[1])])  # [T, N], flipped
    return _scan_(grad.flip(0), cont_prev, scale).flip(0)


def all_steps(like: torch.Tensor) -> torch.Tensor:
    """An all-true [T, N] bool mask, as a stride-0 view (no memory)."""
    return torch.ones(1, 1, dtype=torch.bool, device=like.device).expand(like.shape)  # [1, 1] -> [T, N]


def gae_input_grads(ctx, grad_delta, grad_ret, term):
    """(dL/dreward, dL/dvalue, dL/dnext_value) of GAE from dL/d delta and dL/d ret."""
    need_r, need_v, need_nv = ctx.needs_input_grad[:3]
    return (
        grad_delta if need_r else None,
        grad_ret - grad_delta if need_v else None,
        ctx.gamma * torch.where(term, 0.0, grad_delta) if need_nv else None,
    )


def lambda_input_grads(ctx, grad_b, term, cont):
    """(dL/dreward, dL/dnext_value) of TD(lambda) from dL/db (see `lambda_returns`)."""
    grad_nv = None
    if ctx.needs_input_grad[1]:
        grad_nv = torch.where(term, 0.0, grad_b).mul_(ctx.gamma)
        grad_nv = torch.addcmul(grad_nv, cont, grad_nv, value=-ctx.lam)  # * (1 - lam * cont)
    return grad_b if ctx.needs_input_grad[0] else None, grad_nv


def lambda_cont(terminated, truncated) -> torch.Tensor:
    """TD(lambda) continuation [T, N]: not done, and never on the last step."""
    cont = torch.logical_or(terminated.bool(), truncated.bool()).logical_not_()
    cont[-1:] = False
    return cont


def _gae_forward(reward, value, next_value, terminated, truncated, gamma, lam):
    """(adv, term, cont) of GAE, no autograd."""
    term = terminated.bool()
    cont = torch.logical_or(term, truncated.bool()).logical_not_()
    # next_value of a terminated step is never read (it may be garbage or NaN).
    adv = torch.where(term, 0.0, next_value).mul_(gamma).add_(reward).sub_(value)  # delta
    _scan_(adv, cont, gamma * lam)
    return adv, term, cont


class _GAE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, reward, value, next_value, terminated, truncated, gamma, lam):
        adv, term, cont = _gae_forward(reward, value, next_value, terminated, truncated, gamma, lam)
        ctx.save_for_backward(term, cont)
        ctx.gamma, ctx.lam = gamma, lam
        return adv, adv + value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_adv, grad_ret):
        term, cont = ctx.saved_tensors
        grad_delta = adjoint_scan(grad_adv + grad_ret, cont, ctx.gamma * ctx.lam)
        return (*gae_input_grads(ctx, grad_delta, grad_ret, term), None, None, None, None)


class _LambdaReturns(torch.autograd.Function):
    @staticmethod
    def forward(ctx, reward, next_value, terminated, truncated, gamma, lam):
        term = terminated.bool()
        cont = lambda_cont(term, truncated)
        b = torch.where(term, 0.0, next_value).mul_(gamma)
        b = torch.addcmul(b, cont, b, value=-lam, out=b).add_(reward)  # r + gamma*nv*(1 - lam*cont)
        _scan_(b, cont, gamma * lam)
        ctx.save_for_backward(term, cont)
        ctx.gamma, ctx.lam = gamma, lam
        return b

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        term, cont = ctx.saved_tensors
        grad_b = adjoint_scan(grad, cont, ctx.gamma * ctx.lam)
        return (*lambda_input_grads(ctx, grad_b, term, cont), None, None, None, None)


class _DiscountCumsum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, valid):
        y = torch.where(valid, x, 0.0)
        _scan_(y, valid, gamma)
        ctx.save_for_backward(valid)
        ctx.gamma = gamma
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (valid,) = ctx.saved_tensors
        return torch.where(valid, adjoint_scan(grad, valid, ctx.gamma), 0.0), None, None


def gae(reward, value, next_value, terminated, truncated, gamma: float, lam: float):
    """GAE: `adv_t = delta_t + gamma*lam*(1-done_t)*adv_{t+1}`, `ret = adv + value` ([T, N])."""
    dtype = value.dtype
    acc = acc_dtype(dtype)
    if dtype == acc and not (torch.is_grad_enabled() and (reward.requires_grad or value.requires_grad
                                                          or next_value.requires_grad)):
        adv = _gae_forward(reward, value, next_value, terminated, truncated, gamma, lam)[0]  # no graph to build
        return adv, adv + value
    adv, ret = _GAE.apply(reward.to(acc), value.to(acc), next_value.to(acc), terminated, truncated,
                          gamma, lam)
    return adv.to(dtype), ret.to(dtype)


def lambda_returns(reward, next_value, terminated, truncated, gamma: float, lam: float):
    """TD(lambda): `G_t = r_t + gamma*(1-term_t)*((1-lam)*nv_t + lam*G_{t+1})` ([T, N]).

    At a done step and at the last step `G_{t+1}` is replaced by `nv_t`, so with
    `cont_t = 1 - done_t` (and cont = 0 on the last row) this is the reverse scan
    `G_t = b_t + gamma*lam*cont_t*G_{t+1}`, `b_t = r_t + gamma*(1-term_t)*nv_t*(1 - lam*cont_t)`.
    """
    dtype = next_value.dtype
    acc = acc_dtype(dtype)
    out = _LambdaReturns.apply(reward.to(acc), next_value.to(acc), terminated, truncated, gamma, lam)
    return out.to(dtype)


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
    valid = valid_steps(x.shape, mask, lengths, x.device)
    valid = all_steps(x) if valid is None else valid
    return _DiscountCumsum.apply(x.to(acc_dtype(x.dtype)), gamma, valid).to(x.dtype)


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
    return values.view(-1, *([1] * (x.dim() - 1)))  # [E] -> [E, 1, ...]


def _spread(values: torch.Tensor, lay: Layout) -> torch.Tensor:
    """`expand` through the layout's cached row -> segment map (one gather, no repeat)."""
    return values.index_select(0, lay.ids)


def _sum_values(x: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Segment sums of x [M, ...] in x's dtype, no autograd: one sparse [E, M] product on CPU
    (fp32/fp64), `torch.segment_reduce` otherwise."""
    ones = lay.sums(x.dtype)
    if ones is None:
        return torch.segment_reduce(x, "sum", offsets=lay.ptr)
    if x.dim() == 1:
        return torch.mv(ones, x.contiguous())
    return torch.mm(ones, x.reshape(lay.M, -1).contiguous()).view(lay.E, *x.shape[1:])


class _SegmentSum(torch.autograd.Function):
    """Segment sum with the gradient `g[segment of row]` (a gather through the cached map)."""

    @staticmethod
    def forward(ctx, x, lay):
        ctx.lay = lay
        return _sum_values(x, lay)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return _spread(grad, ctx.lay), None


def _sum(x: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Segment sums of x with autograd when x needs it."""
    if x.requires_grad and torch.is_grad_enabled():
        return _SegmentSum.apply(x, lay)
    return _sum_values(x, lay)


def segment_sum(x, ptr):
    """`out[e] = sum_{ptr[e] <= i < ptr[e+1]} x[i]`; 0 for empty segments."""
    return _as(_sum(_as(x, acc_dtype(x.dtype)), layout(ptr, x.shape[0])), x.dtype)


def segment_mean(x, ptr):
    """Segment sum over the segment length; 0 for empty segments."""
    lay = layout(ptr, x.shape[0])
    total = _sum(x.to(acc_dtype(x.dtype)), lay)
    count = _per_segment(lay.lengths.clamp_min(1), x)
    return (total / count).to(x.dtype)


def segment_max(x, ptr):
    """`out[e] = max x[ptr[e]:ptr[e+1]]`; -inf for empty segments. Gradient split among ties."""
    return torch.segment_reduce(x, "max", offsets=ptr)


def _finite_max(x, ptr):
    """Segment max with 0 where it is not finite (empty / all -inf), detached: a safe exp shift."""
    return segment_max(x.detach(), ptr).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _global_shift(x, ptr):
    """A single exp shift for all segments, per column: the global max g, when it is safe.

    `exp(x - g)` loses precision only in a segment whose values all lie far below g. Returns
    `(g [1, ...], segment sums of exp(x - g) [E, ...])`, or None when a non-empty segment's
    sum is not at least `tiny * 2**24` of the accumulation dtype (underflow, all -inf; NaN, which
    is what an infinite or NaN g gives); callers then shift by the per-segment max. One plain max
    replaces a segment max and its expansion, the costliest steps on CPU; one host read decides.
    """
    if x.shape[0] == 0:
        return None
    lay = layout(ptr, x.shape[0])
    g = x.detach().amax(0, keepdim=True)  # [1, ...]
    e = torch.exp(x - g) if x.requires_grad and torch.is_grad_enabled() else torch.sub(x, g).exp_()
    total = _sum(e, lay)
    floor = torch.finfo(total.dtype).tiny * 2.0 ** 24
    if lay.all_nonempty:  # one reduction decides (NaN fails the comparison: unsafe)
        if not bool(total.detach().amin() >= floor):
            return None
    elif bool(((total.detach() >= floor).logical_not_() & _per_segment(lay.nonempty, total)).any()):
        return None
    return g, total


def segment_logsumexp(x, ptr):
    """`out[e] = log sum exp x[ptr[e]:ptr[e+1]]`; -inf for empty or all -inf segments.

    Shifted by a detached max (global when safe, else per segment), so the gradient is exactly
    softmax(x) per segment (0 for all -inf segments, never NaN).
    """
    dtype = x.dtype
    x = _as(x, acc_dtype(dtype))
    fast = _global_shift(x, ptr)
    if fast is not None:  # every non-empty segment has mass; an empty one has log(0) = -inf
        g, total = fast  # g [1, ...] broadcasts over the segments
        return _as(torch.log(total) + g, dtype)
    lay = layout(ptr, x.shape[0])
    shift = _finite_max(x, ptr)  # [E, ...]
    total = _sum(torch.exp(x - _spread(shift, lay)), lay)
    positive = total > 0
    lse = torch.log(torch.where(positive, total, 1.0)) + shift
    return torch.where(positive, lse, _NEG_INF).to(dtype)


def _log_softmax_values(x, ptr):
    """The log-softmax of x [M, ...] per segment, no autograd; one [M] buffer reused in place
    (each fresh [M] allocation costs page faults)."""
    lay = layout(ptr, x.shape[0])
    fast = _global_shift(x, ptr)
    if fast is not None:  # every non-empty segment has mass: lse = g + log(total)
        g, total = fast
        buf = _spread(torch.log(total).add_(g), lay)
        return torch.sub(x, buf, out=buf)
    top = _finite_max(x, ptr)
    buf = _spread(top, lay)
    total = _sum_values(torch.sub(x, buf, out=buf).exp_(), lay)
    # log(1) = 0 where a segment has no mass: its entries are all -inf and stay -inf.
    lse = top.add_(torch.log(torch.where(total > 0, total, 1.0)))  # [E, ...] per-segment logsumexp
    buf = _spread(lse, lay)
    return torch.sub(x, buf, out=buf)


class _SegmentLogSoftmax(torch.autograd.Function):
    """`y = x - lse[segment]`; gradient `g - exp(y) * segment_sum(g)[segment]` (0 into -inf
    entries through exp(-inf) = 0)."""

    @staticmethod
    def forward(ctx, x, ptr):
        out = _log_softmax_values(x, ptr)
        # the softmax itself is kept (not a saved output: no unpacking checks in the backward,
        # which at GFlowNet sizes is mostly fixed cost)
        ctx.p, ctx.lay = out.exp(), layout(ptr, x.shape[0])
        return out

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not itself differentiable
            raise RuntimeError("segment_log_softmax supports one backward only (no create_graph / double backward)")
        total = _spread(_sum_values(grad, ctx.lay), ctx.lay)
        return torch.addcmul(grad, ctx.p, total, value=-1.0), None


def segment_log_softmax(x, ptr):
    """`out[i] = x[i] - logsumexp(segment of i)`; -inf entries stay -inf, all -inf gives -inf."""
    dtype = x.dtype
    x = _as(x, acc_dtype(dtype))
    if x.requires_grad and torch.is_grad_enabled():
        return _as(_SegmentLogSoftmax.apply(x, ptr), dtype)
    return _as(_log_softmax_values(x, ptr), dtype)


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
