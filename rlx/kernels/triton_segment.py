"""Triton kernels for segment ops over CSR offsets `ptr` (E + 1 entries) and for scatter_add.

x is [M, F] (1-D x is [M, 1]) and reductions run over rows. The unit of work is an *item*, a row
range, and each program takes a tile of GROUP (item, column) pairs x BLOCK_M rows: thousands of
short segments (a few rows each) are packed GROUP to a program, so nothing is latency bound on
one tiny segment, and for F > 1 neighbouring pairs are neighbouring columns, so loads coalesce.
Accumulators are per lane and reduced once at the end, so the row loop is elementwise.

When M <= CHUNK_ROWS the items are the segments: one pass. Otherwise every segment is cut into
pieces of at most CHUNK_ROWS rows (so one huge segment still spreads over many programs), the
pieces write partial results, and a second pass combines each segment's partials (sum of sums,
max of maxes, logsumexp of logsumexps). The split is computed on device from a static bound on
the number of pieces: no host sync.
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
# Triton decides per @triton.jit function, its own helpers included, when `triton` is first imported,
# so TRITON_INTERPRET=1 set after that import does not make a working interpreter.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1" and type(tl.standard.cdiv).__name__ == "InterpretedFunction"

CHUNK_ROWS = 2048  # rows per item at most once segments are split (M > CHUNK_ROWS)
TILE = 1024  # elements per program tile, GROUP * BLOCK_M
# Kernels may only read constexpr globals.
SUM, MAX, LSE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
_ROW_SENTINEL = tl.constexpr(2**62)  # larger than any row index: loses every lowest-row tie-break


@triton.jit
def _pairs(rows, n_items, F, GROUP: tl.constexpr):
    """This program's GROUP (item, column) pairs: flat pair index g = item * F + column, the
    pair's column, its row range [start, end) (empty when masked) and the in-range mask."""
    g = tl.program_id(0).to(tl.int64) * GROUP + tl.arange(0, GROUP)
    item = g // F
    ok = item < n_items
    start = tl.load(rows + item, mask=ok, other=0)
    end = tl.load(rows + item + 1, mask=ok, other=0)
    return g, item, g % F, ok, start, end


@triton.jit
def _segment_reduce_kernel(x, rows, out, n_items, F, OP: tl.constexpr, ACC: tl.constexpr,
                           GROUP: tl.constexpr, BLOCK_M: tl.constexpr):
    """`out[w, f] = reduce_{rows[w] <= i < rows[w+1]} x[i, f]`: sum (0 if empty), max (-inf if
    empty) or logsumexp (-inf if empty or all -inf)."""
    g, item, col, ok, start, end = _pairs(rows, n_items, F, GROUP)
    total = tl.zeros([GROUP, BLOCK_M], ACC)
    top = tl.full([GROUP, BLOCK_M], float("-inf"), ACC)
    for j in range(0, tl.max(end - start, axis=0), BLOCK_M):
        r = start[:, None] + j + tl.arange(0, BLOCK_M)[None, :]  # [GROUP, BLOCK_M] row numbers
        mask = r < end[:, None]
        offs = r * F + col[:, None]
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
        result = tl.sum(total, axis=1)
    elif OP == MAX:
        result = tl.max(top, axis=1)
    else:
        pair_top = tl.max(top, axis=1)
        shift = tl.where(pair_top == float("-inf"), 0.0, pair_top)
        mass = tl.sum(total * tl.exp(top - shift[:, None]), axis=1)
        result = tl.where(mass > 0, tl.log(tl.where(mass > 0, mass, 1.0)) + shift, float("-inf"))
    tl.store(out + g, result.to(out.dtype.element_ty), mask=ok)


@triton.jit
def _segment_sub_kernel(x, rows, item_seg, lse, out, n_items, F, ACC: tl.constexpr,
                        GROUP: tl.constexpr, BLOCK_M: tl.constexpr):
    """`out[i, f] = x[i, f] - lse[segment of i, f]` over each item's rows; a segment whose lse is
    -inf (all entries -inf) keeps its -inf entries instead of producing NaN."""
    g, item, col, ok, start, end = _pairs(rows, n_items, F, GROUP)
    seg = tl.load(item_seg + item, mask=ok, other=0)
    shift = tl.load(lse + seg * F + col, mask=ok, other=0.0).to(ACC)
    shift = tl.where(shift == float("-inf"), 0.0, shift)
    for j in range(0, tl.max(end - start, axis=0), BLOCK_M):
        r = start[:, None] + j + tl.arange(0, BLOCK_M)[None, :]  # [GROUP, BLOCK_M] row numbers
        mask = r < end[:, None]
        offs = r * F + col[:, None]
        xt = tl.load(x + offs, mask=mask, other=0.0).to(ACC)
        tl.store(out + offs, (xt - shift[:, None]).to(out.dtype.element_ty), mask=mask)


@triton.jit
def _segment_argmax_kernel(scores, noise, row_of, rows, best_score, best_row, n_items,
                           GUMBEL: tl.constexpr, GATHER: tl.constexpr,
                           GROUP: tl.constexpr, BLOCK_M: tl.constexpr):
    """Per item w of 1-D scores: the max over its rows i of `s_i = scores[i]`
    (`- log(-log noise[i])` if GUMBEL) and the row holding it (`row_of[i]` if GATHER, else i),
    lowest row on ties, -1 if the max is -inf."""
    g, item, col, ok, start, end = _pairs(rows, n_items, 1, GROUP)
    lane_top = tl.full([GROUP, BLOCK_M], float("-inf"), tl.float32)
    lane_row = tl.full([GROUP, BLOCK_M], -1, tl.int64)
    for j in range(0, tl.max(end - start, axis=0), BLOCK_M):
        r = start[:, None] + j + tl.arange(0, BLOCK_M)[None, :]  # [GROUP, BLOCK_M] row numbers
        mask = r < end[:, None]
        s = tl.load(scores + r, mask=mask, other=float("-inf")).to(tl.float32)
        if GUMBEL:
            s = s - tl.log(-tl.log(tl.load(noise + r, mask=mask, other=0.5)))
        if GATHER:
            cand = tl.load(row_of + r, mask=mask, other=-1)
        else:
            cand = r
        better = s > lane_top  # strict: within a lane the earliest row keeps a tie
        lane_row = tl.where(better, cand, lane_row)
        lane_top = tl.where(better, s, lane_top)
    top = tl.max(lane_top, axis=1)
    row = tl.min(tl.where(lane_top == top[:, None], lane_row, _ROW_SENTINEL), axis=1)
    tl.store(best_score + g, top, mask=ok)
    tl.store(best_row + g, tl.where(top == float("-inf"), -1, row), mask=ok)


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
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).contiguous()  # [M, ...] -> [M, F]


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _tiling(M: int, items: int, F: int) -> tuple[int, int, int, int]:
    """(GROUP, BLOCK_M, num_warps, grid size): BLOCK_M follows the mean rows per item (1..1024),
    GROUP fills the rest of a TILE-element tile with (item, column) pairs."""
    pairs = max(items * F, 1)
    block_m = min(triton.next_power_of_2(max(M // max(items, 1), 1)), 1024)
    group = min(max(TILE // block_m, 1), triton.next_power_of_2(pairs))
    tile = group * block_m
    warps = 4 if tile >= 1024 else 2 if tile >= 256 else 1
    return group, block_m, warps, triton.cdiv(pairs, group)


def scatter_tiling(F: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_F) of `_scatter_add_kernel`: up to 64 columns, TILE elements."""
    block_f = min(triton.next_power_of_2(F), 64)
    return max(TILE // block_f, 16), block_f


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


def _launch_reduce(x2: torch.Tensor, rows: torch.Tensor, op, dtype: torch.dtype) -> torch.Tensor:
    """One pass of `_segment_reduce_kernel` over items `rows` of x2 [M, F]: [items, F]."""
    M, F = x2.shape
    items = rows.numel() - 1
    out = torch.empty(items, F, dtype=dtype, device=x2.device)
    if out.numel() == 0:
        return out
    group, block_m, warps, grid = _tiling(M, items, F)
    _segment_reduce_kernel[(grid,)](x2, rows, out, items, F, OP=op, ACC=_tl_acc(x2.dtype),
                                    GROUP=group, BLOCK_M=block_m, num_warps=warps)
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
    return ptr.diff().view(-1, *([1] * (like.dim() - 1)))  # [E] -> [E, 1, ...]


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
        items, F = work.seg.numel(), x2.shape[1]
        if out.numel():
            group, block_m, warps, grid = _tiling(M, items, F)
            _segment_sub_kernel[(grid,)](x2, work.rows, work.seg, lse, out, items, F,
                                         ACC=_tl_acc(x.dtype), GROUP=group, BLOCK_M=block_m,
                                         num_warps=warps)
        out = out.view(x.shape)  # [M, F] -> [M, ...]
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
            block_k, block_f = scatter_tiling(F)
            _scatter_add_kernel[(triton.cdiv(K, block_k), triton.cdiv(F, block_f))](
                src2, index.contiguous(), out, K, F, dim_size, BLOCK_K=block_k, BLOCK_F=block_f)
        ctx.save_for_backward(index)
        return out.to(src.dtype).view(dim_size, *src.shape[1:])  # [dim_size, F] -> [dim_size, ...]

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
            group, block_m, warps, grid = _tiling(scores.shape[0], items, 1)
            _segment_argmax_kernel[(grid,)](scores, noise, row_of, rows, best_score, best_row, items,
                                            GUMBEL=gumbel, GATHER=gather, GROUP=group,
                                            BLOCK_M=block_m, num_warps=warps)
        scores, row_of = best_score, best_row
    return row_of[:E]
