"""Triton kernels for segment ops over CSR offsets `ptr` (E + 1 entries) and for scatter_add.

x is [M, F] (1-D x is viewed as [M, 1]) and reductions run over rows. One program reduces one
*work item*, a row range, in tiles of [BLOCK_M, BLOCK_F] with per-lane accumulators, so the loop
body is elementwise and the cross-lane reduction happens once at the end. When M <= CHUNK_ROWS
the work items are the segments themselves: one pass, thousands of short segments run as
thousands of programs. Otherwise each segment is cut into pieces of at most CHUNK_ROWS rows
(a few huge segments still fill the GPU), the pieces write partial results, and a second pass
combines each segment's partials (sum of sums, max of maxes, logsumexp of logsumexps).
The split is computed on device from a static bound on the number of pieces: no host sync.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from rlx.kernels.reference import acc_dtype, expand, gumbel_noise, lengths_to_ptr

# Whether these kernels were built for the interpreter (decided when this module is imported).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

CHUNK_ROWS = 1 << 14  # rows one program reduces before a segment is split over several
SUM, MAX, LSE = 0, 1, 2
_ROW_SENTINEL = 2**62  # larger than any row index: loses every lowest-row tie-break


@triton.jit
def _segment_reduce_kernel(x, rows, out, F, OP: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
    """`out[w] = reduce x[rows[w]:rows[w+1]]` with reduce = sum (0 if empty), max (-inf if
    empty) or logsumexp (-inf if empty or all -inf), for item w = program_id(0)."""
    item = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    col_ok = cols < F
    start = tl.load(rows + item)
    end = tl.load(rows + item + 1)
    total = tl.zeros([BLOCK_M, BLOCK_F], ACC)
    top = tl.full([BLOCK_M, BLOCK_F], float("-inf"), ACC)
    for row0 in range(start, end, BLOCK_M):
        r = row0 + tl.arange(0, BLOCK_M)
        mask = (r < end)[:, None] & col_ok[None, :]
        offs = r[:, None] * F + cols[None, :]
        if OP == SUM:
            total += tl.load(x + offs, mask=mask, other=0.0).to(ACC)
        else:
            xt = tl.load(x + offs, mask=mask, other=float("-inf")).to(ACC)
            new_top = tl.maximum(top, xt)
            if OP == LSE:  # online logsumexp per lane, shifted by the lane's running max
                shift = tl.where(new_top == float("-inf"), 0.0, new_top)
                total = total * tl.exp(top - shift) + tl.exp(xt - shift)
            top = new_top
    if OP == SUM:
        result = tl.sum(total, axis=0)
    elif OP == MAX:
        result = tl.max(top, axis=0)
    else:
        seg_top = tl.max(top, axis=0)
        shift = tl.where(seg_top == float("-inf"), 0.0, seg_top)
        mass = tl.sum(total * tl.exp(top - shift[None, :]), axis=0)
        result = tl.where(mass > 0, tl.log(tl.where(mass > 0, mass, 1.0)) + shift, float("-inf"))
    tl.store(out + item.to(tl.int64) * F + cols, result.to(out.dtype.element_ty), mask=col_ok)


@triton.jit
def _segment_sub_kernel(x, rows, item_seg, lse, out, F, ACC: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr):
    """`out[i] = x[i] - lse[segment of i]` over the rows of item program_id(0); a segment whose
    lse is -inf (all entries -inf) keeps its -inf entries instead of producing NaN."""
    item = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    col_ok = cols < F
    start = tl.load(rows + item)
    end = tl.load(rows + item + 1)
    seg = tl.load(item_seg + item)
    shift = tl.load(lse + seg * F + cols, mask=col_ok, other=0.0).to(ACC)
    shift = tl.where(shift == float("-inf"), 0.0, shift)
    for row0 in range(start, end, BLOCK_M):
        r = row0 + tl.arange(0, BLOCK_M)
        mask = (r < end)[:, None] & col_ok[None, :]
        offs = r[:, None] * F + cols[None, :]
        xt = tl.load(x + offs, mask=mask, other=0.0).to(ACC)
        tl.store(out + offs, (xt - shift[None, :]).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _segment_argmax_kernel(scores, noise, row_of, rows, best_score, best_row,
                           GUMBEL: tl.constexpr, GATHER: tl.constexpr, BLOCK_M: tl.constexpr):
    """Per item w: the max over its rows i of `s_i = scores[i] (- log(-log noise[i]) if GUMBEL)`
    and the row holding it (`row_of[i]` if GATHER, else i), lowest row on ties, -1 if the max
    is -inf."""
    item = tl.program_id(0)
    start = tl.load(rows + item)
    end = tl.load(rows + item + 1)
    lane_top = tl.full([BLOCK_M], float("-inf"), tl.float32)
    lane_row = tl.full([BLOCK_M], -1, tl.int64)
    for row0 in range(start, end, BLOCK_M):
        r = row0 + tl.arange(0, BLOCK_M)
        ok = r < end
        s = tl.load(scores + r, mask=ok, other=float("-inf")).to(tl.float32)
        if GUMBEL:
            s = s - tl.log(-tl.log(tl.load(noise + r, mask=ok, other=0.5)))
        if GATHER:
            cand = tl.load(row_of + r, mask=ok, other=-1)
        else:
            cand = r.to(tl.int64)
        better = s > lane_top  # strict: within a lane the earliest row keeps a tie
        lane_row = tl.where(better, cand, lane_row)
        lane_top = tl.where(better, s, lane_top)
    top = tl.max(lane_top, axis=0)
    row = tl.min(tl.where(lane_top == top, lane_row, _ROW_SENTINEL), axis=0)
    tl.store(best_score + item, top)
    tl.store(best_row + item, tl.where(top == float("-inf"), -1, row))


@triton.jit
def _scatter_add_kernel(src, index, out, K, F, dim_size,
                        BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr):
    """`out[index[k]] += src[k]` with atomics; out-of-range indices are dropped."""
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    k_ok = k < K
    dst = tl.load(index + k, mask=k_ok, other=-1)
    ok = (k_ok & (dst >= 0) & (dst < dim_size))[:, None] & (cols < F)[None, :]
    vals = tl.load(src + k.to(tl.int64)[:, None] * F + cols[None, :], mask=ok, other=0.0)
    dst_offs = dst.to(tl.int64)[:, None] * F + cols[None, :]
    tl.atomic_add(out + dst_offs, vals.to(out.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x [M, ...] as a contiguous [M, F] matrix (F = 1 for 1-D x), also when M = 0."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).contiguous()


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _blocks(M: int, items: int, F: int) -> tuple[int, int, int]:
    """BLOCK_M, BLOCK_F, num_warps: the row tile follows the mean rows per item (16..256)."""
    block_f = min(triton.next_power_of_2(F), 64)
    mean_rows = max(M // max(items, 1), 1)
    block_m = min(max(triton.next_power_of_2(mean_rows), 16), 256, max(8192 // block_f, 16))
    tile = block_m * block_f
    return block_m, block_f, 4 if tile >= 2048 else 2 if tile >= 512 else 1


@dataclass
class _Work:
    """How rows are dealt to programs: item w covers rows [rows[w], rows[w+1])."""

    rows: torch.Tensor  # [W + 1] row offsets, a refinement of ptr
    seg: torch.Tensor  # [W] segment of each item
    item_ptr: torch.Tensor | None  # [E + 1] each segment's items; None when items are segments


def _plan(ptr: torch.Tensor, M: int) -> _Work:
    """Work items: the segments when M <= CHUNK_ROWS, else pieces of at most CHUNK_ROWS rows."""
    E = ptr.numel() - 1
    if M <= CHUNK_ROWS:
        return _Work(ptr, torch.arange(E, device=ptr.device), None)
    pieces = (ptr.diff() + CHUNK_ROWS - 1).div(CHUNK_ROWS, rounding_mode="floor").clamp_min(1)  # [E]
    item_ptr = lengths_to_ptr(pieces)  # [E + 1]
    W = E + -(-M // CHUNK_ROWS)  # static bound on item_ptr[-1]; surplus items are empty
    items = torch.arange(W, device=ptr.device)  # [W]
    seg = torch.searchsorted(item_ptr, items, right=True) - 1  # [W], E for surplus items
    first = ptr[seg] + (items - item_ptr[seg]) * CHUNK_ROWS  # [W]
    rows = torch.cat([first.clamp_max(M), ptr[-1:]])  # [W + 1]
    return _Work(rows, seg.clamp_max(max(E - 1, 0)), item_ptr)


def _launch_reduce(x2: torch.Tensor, rows: torch.Tensor, op: int, dtype: torch.dtype) -> torch.Tensor:
    """One pass of `_segment_reduce_kernel` over items `rows` of x2 [M, F]: [items, F]."""
    M, F = x2.shape
    items = rows.numel() - 1
    out = torch.empty(items, F, dtype=dtype, device=x2.device)
    if out.numel() == 0:
        return out
    block_m, block_f, warps = _blocks(M, items, F)
    _segment_reduce_kernel[(items, triton.cdiv(F, block_f))](
        x2, rows, out, F, OP=op, ACC=_tl_acc(x2.dtype), BLOCK_M=block_m, BLOCK_F=block_f,
        num_warps=warps)
    return out


def _reduce(x: torch.Tensor, ptr: torch.Tensor, op: int, work: _Work, dtype: torch.dtype):
    """Segment reduce of x [M, ...] -> [E, ...] in `dtype`, one or two passes per `work`."""
    x2 = _rows(x)  # [M, F]
    if work.item_ptr is None:
        out = _launch_reduce(x2, work.rows, op, dtype)
    else:
        partial = _launch_reduce(x2, work.rows, op, acc_dtype(x.dtype))  # [W, F]
        out = _launch_reduce(partial, work.item_ptr, op, dtype)  # [E, F]
    return out.view(ptr.numel() - 1, *x.shape[1:])  # [E, ...]


def reduce(x: torch.Tensor, ptr: torch.Tensor, op: int) -> torch.Tensor:
    """Segment sum / max / logsumexp of x [M, ...] over ptr: [E, ...] in x's dtype."""
    return _reduce(x, ptr, op, _plan(ptr, x.shape[0]), x.dtype)


def _segment_counts(ptr: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Rows per segment, shaped [E, 1, ...] to broadcast against [E, *like.shape[1:]]."""
    return ptr.diff().view(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------


class SegmentSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ptr):
        ctx.save_for_backward(ptr)
        ctx.M = x.shape[0]
        return reduce(x, ptr, SUM)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (ptr,) = ctx.saved_tensors
        return expand(grad, ptr, ctx.M), None


class SegmentMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ptr):
        ctx.save_for_backward(ptr)
        ctx.M = x.shape[0]
        total = _reduce(x, ptr, SUM, _plan(ptr, x.shape[0]), acc_dtype(x.dtype))  # [E, ...]
        return (total / _segment_counts(ptr, total).clamp_min(1)).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (ptr,) = ctx.saved_tensors
        return expand(grad / _segment_counts(ptr, grad).clamp_min(1), ptr, ctx.M), None


class SegmentMax(torch.autograd.Function):
    """Gradient split evenly among the rows equal to the max (as torch.segment_reduce)."""

    @staticmethod
    def forward(ctx, x, ptr):
        out = reduce(x, ptr, MAX)
        ctx.save_for_backward(x, ptr, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, ptr, out = ctx.saved_tensors
        M = x.shape[0]
        hit = x == expand(out, ptr, M)  # [M, ...]
        ties = reduce(hit.to(grad.dtype), ptr, SUM)  # [E, ...]; 0 only for empty segments
        return torch.where(hit, expand(grad / ties, ptr, M), 0.0), None


class SegmentLogsumexp(torch.autograd.Function):
    """Gradient softmax(x) per segment; 0 for all -inf segments."""

    @staticmethod
    def forward(ctx, x, ptr):
        out = reduce(x, ptr, LSE)
        ctx.save_for_backward(x, ptr, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, ptr, out = ctx.saved_tensors
        M = x.shape[0]
        shift = torch.where(out == float("-inf"), 0.0, out)
        return expand(grad, ptr, M) * torch.exp(x - expand(shift, ptr, M)), None


class SegmentLogSoftmax(torch.autograd.Function):
    """`y = x - lse[segment]`; gradient `g - exp(y) * segment_sum(g)[segment]`."""

    @staticmethod
    def forward(ctx, x, ptr):
        M = x.shape[0]
        work = _plan(ptr, M)
        x2 = _rows(x)  # [M, F]
        lse = _reduce(x2, ptr, LSE, work, acc_dtype(x.dtype))  # [E, F]
        out = torch.empty_like(x2)
        if out.numel():
            block_m, block_f, warps = _blocks(M, work.seg.numel(), x2.shape[1])
            _segment_sub_kernel[(work.seg.numel(), triton.cdiv(x2.shape[1], block_f))](
                x2, work.rows, work.seg, lse, out, x2.shape[1], ACC=_tl_acc(x.dtype),
                BLOCK_M=block_m, BLOCK_F=block_f, num_warps=warps)
        out = out.view(x.shape)
        ctx.save_for_backward(out, ptr)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        out, ptr = ctx.saved_tensors
        total = reduce(grad, ptr, SUM)  # [E, ...]
        return grad - torch.exp(out) * expand(total, ptr, out.shape[0]), None


class ScatterAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, index, dim_size):
        src2 = _rows(src)  # [K, F]
        K, F = src2.shape
        out = torch.zeros(dim_size, F, dtype=acc_dtype(src.dtype), device=src.device)
        if src2.numel():
            block_f = min(triton.next_power_of_2(F), 64)
            block_k = max(2048 // block_f, 16)
            _scatter_add_kernel[(triton.cdiv(K, block_k), triton.cdiv(F, block_f))](
                src2, index.contiguous(), out, K, F, dim_size, BLOCK_K=block_k, BLOCK_F=block_f)
        ctx.save_for_backward(index)
        return out.to(src.dtype).view(dim_size, *src.shape[1:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def segment_sample(logits: torch.Tensor, ptr: torch.Tensor, generator=None) -> torch.Tensor:
    """Gumbel-max draw per segment of 1-D logits: global row index [E], -1 if nothing to draw."""
    M = logits.shape[0]
    E = ptr.numel() - 1
    noise = gumbel_noise(M, logits.device, generator)  # [M], the same draws as the torch twin
    logits = logits.detach().contiguous()
    work = _plan(ptr, M)
    passes = [(work.rows, True, False)]
    if work.item_ptr is not None:
        passes.append((work.item_ptr, False, True))
    scores, row_of = logits, logits  # row_of is unread until the gather pass
    for rows, gumbel, gather in passes:
        items = rows.numel() - 1
        best_score = torch.empty(items, dtype=torch.float32, device=logits.device)
        best_row = torch.empty(items, dtype=torch.int64, device=logits.device)
        if items:
            block_m, _, warps = _blocks(scores.shape[0], items, 1)
            _segment_argmax_kernel[(items,)](scores, noise, row_of, rows, best_score, best_row,
                                             GUMBEL=gumbel, GATHER=gather, BLOCK_M=block_m,
                                             num_warps=warps)
        scores, row_of = best_score, best_row
    return row_of[:E]
