"""Triton kernels for the time-major recurrences: GAE, TD(lambda) returns, discounted cumsum.

All three are the reverse affine recurrence `y_t = b_t + a_t * y_{t+1}` on [T, N] tensors, with
(a, b) computed from the inputs inside the kernel. One program owns BLOCK_N columns and walks T
in tiles of BLOCK_T steps from the end: within a tile the recurrence is a `tl.associative_scan`
over affine maps (all BLOCK_T steps in flight), and one carry per column links the tiles. Loads
do not depend on the carry, so the compiler can pipeline the next tile's loads.
Accumulation is fp32 (fp64 for fp64 inputs); gamma and lam are runtime fp32 scalars.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from rlx.kernels import reference

# Whether these kernels were built for the interpreter (decided when this module is imported).
# Triton decides per @triton.jit function, its own helpers included, when `triton` is first imported,
# so TRITON_INTERPRET=1 set after that import does not make a working interpreter.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1" and type(tl.standard.cdiv).__name__ == "InterpretedFunction"

BLOCK_T = 64
BLOCK_N = 16
NUM_WARPS = 4

# How discount_cumsum learns which steps are valid; kernels may only read constexpr globals.
NO_MASK, STEP_MASK, LENGTHS = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def _compose(a_first, b_first, a_then, b_then):
    """Affine maps `y -> b + a*y` composed: apply (a_first, b_first), then (a_then, b_then)."""
    return a_then * a_first, b_then + a_then * b_first


@triton.jit
def _scan_tile(a, b, carry, BLOCK_T: tl.constexpr):
    """`y_i = b_i + a_i * y_{i-1}` down axis 0 of a [BLOCK_T, BLOCK_N] tile, `y_{-1} = carry`.

    Returns y and its last row (the carry into the next tile).
    """
    a_run, b_run = tl.associative_scan((a, b), 0, _compose)
    y = b_run + a_run * carry[None, :]
    last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
    return y, tl.sum(tl.where(last, y, 0.0), axis=0)


@triton.jit
def _tile(T, N, k, REVERSE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """Steps [BLOCK_T], element offsets and in-bounds mask [BLOCK_T, BLOCK_N] of the k-th tile.

    REVERSE walks time from T - 1 down, so scan order i = 0, 1, ... is t = T - 1 - k*BLOCK_T - i.
    """
    i = tl.arange(0, BLOCK_T)
    if REVERSE:
        steps = T - 1 - k * BLOCK_T - i
    else:
        steps = k * BLOCK_T + i
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = ((steps >= 0) & (steps < T))[:, None] & (cols < N)[None, :]
    offs = steps.to(tl.int64)[:, None] * N + cols[None, :]
    return steps, offs, mask


@triton.jit
def _gae_kernel(reward, value, next_value, terminated, truncated, adv, ret, T, N, gamma, lam,
                ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """`adv_t = delta_t + gamma*lam*(1-done_t)*adv_{t+1}`, `ret = adv + value`.

    `delta_t = r_t + gamma*(1-term_t)*nv_t - v_t`; nv of a terminated step is never used.
    """
    carry = tl.zeros([BLOCK_N], ACC)
    for k in range(0, tl.cdiv(T, BLOCK_T)):
        steps, offs, mask = _tile(T, N, k, True, BLOCK_T, BLOCK_N)
        r = tl.load(reward + offs, mask=mask, other=0.0).to(ACC)
        v = tl.load(value + offs, mask=mask, other=0.0).to(ACC)
        nv = tl.load(next_value + offs, mask=mask, other=0.0).to(ACC)
        term = tl.load(terminated + offs, mask=mask, other=0) != 0
        done = term | (tl.load(truncated + offs, mask=mask, other=0) != 0)
        delta = r + gamma * tl.where(term, 0.0, nv) - v
        a = tl.where(done, 0.0, gamma * lam).to(ACC)
        y, carry = _scan_tile(a, delta, carry, BLOCK_T)
        tl.store(adv + offs, y.to(adv.dtype.element_ty), mask=mask)
        tl.store(ret + offs, (y + v).to(ret.dtype.element_ty), mask=mask)


@triton.jit
def _lambda_return_kernel(reward, next_value, terminated, truncated, out, T, N, gamma, lam,
                          ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """`G_t = b_t + gamma*lam*cont_t*G_{t+1}`, `b_t = r_t + gamma*(1-term_t)*nv_t*(1-lam*cont_t)`.

    `cont_t = 1 - done_t`, forced to 0 on the last step (where G_{t+1} is replaced by nv_t).
    """
    carry = tl.zeros([BLOCK_N], ACC)
    for k in range(0, tl.cdiv(T, BLOCK_T)):
        steps, offs, mask = _tile(T, N, k, True, BLOCK_T, BLOCK_N)
        r = tl.load(reward + offs, mask=mask, other=0.0).to(ACC)
        nv = tl.load(next_value + offs, mask=mask, other=0.0).to(ACC)
        term = tl.load(terminated + offs, mask=mask, other=0) != 0
        trunc = tl.load(truncated + offs, mask=mask, other=0) != 0
        cont = ((term | trunc) == 0) & (steps < T - 1)[:, None]
        b = r + gamma * tl.where(term, 0.0, nv) * tl.where(cont, 1.0 - lam, 1.0)
        a = tl.where(cont, gamma * lam, 0.0).to(ACC)
        y, carry = _scan_tile(a, b, carry, BLOCK_T)
        tl.store(out + offs, y.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _discount_cumsum_kernel(x, valid, out, T, N, gamma,
                            MASK_MODE: tl.constexpr, ACC: tl.constexpr,
                            BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """`y_t = valid_t * (x_t + gamma * y_{t+1})`; valid is a [T, N] mask, [N] lengths, or all steps."""
    carry = tl.zeros([BLOCK_N], ACC)
    for k in range(0, tl.cdiv(T, BLOCK_T)):
        steps, offs, mask = _tile(T, N, k, True, BLOCK_T, BLOCK_N)
        if MASK_MODE == STEP_MASK:
            ok = tl.load(valid + offs, mask=mask, other=0) != 0
        elif MASK_MODE == LENGTHS:
            cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
            length = tl.load(valid + cols, mask=cols < N, other=0)
            ok = steps[:, None] < length[None, :]
        else:
            ok = mask
        b = tl.where(ok, tl.load(x + offs, mask=mask, other=0.0).to(ACC), 0.0)
        a = tl.where(ok, gamma, 0.0).to(ACC)
        y, carry = _scan_tile(a, b, carry, BLOCK_T)
        tl.store(out + offs, y.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _adjoint_scan_kernel(grad, cont, out, T, N, scale,
                         ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """`out_t = grad_t + scale * cont_{t-1} * out_{t-1}`, `out_{-1} = 0`.

    The backward of `y_t = b_t + scale * cont_t * y_{t+1}`: out = dL/db given grad = dL/dy.
    """
    carry = tl.zeros([BLOCK_N], ACC)
    for k in range(0, tl.cdiv(T, BLOCK_T)):
        steps, offs, mask = _tile(T, N, k, False, BLOCK_T, BLOCK_N)
        g = tl.load(grad + offs, mask=mask, other=0.0).to(ACC)
        prev = tl.load(cont + offs - N, mask=mask & (steps >= 1)[:, None], other=0) != 0
        a = tl.where(prev, scale, 0.0).to(ACC)
        y, carry = _scan_tile(a, g, carry, BLOCK_T)
        tl.store(out + offs, y.to(out.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _grid(N: int) -> tuple[int]:
    return (triton.cdiv(N, BLOCK_N),)


def _meta(dtype: torch.dtype) -> dict:
    return dict(ACC=_acc(dtype), BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N, num_warps=NUM_WARPS)


def adjoint_scan(grad: torch.Tensor, cont: torch.Tensor, scale: float) -> torch.Tensor:
    """dL/db of `y_t = b_t + scale * cont_t * y_{t+1}` from dL/dy ([T, N]; cont bool)."""
    grad, cont = grad.contiguous(), cont.contiguous()
    out = torch.empty_like(grad)
    T, N = grad.shape
    if out.numel():
        _adjoint_scan_kernel[_grid(N)](grad, cont, out, T, N, scale, **_meta(grad.dtype))
    return out


class GAE(torch.autograd.Function):
    """Triton GAE; differentiable in reward, value and next_value."""

    @staticmethod
    def forward(ctx, reward, value, next_value, terminated, truncated, gamma, lam):
        reward, value, next_value = reward.contiguous(), value.contiguous(), next_value.contiguous()
        terminated, truncated = terminated.contiguous(), truncated.contiguous()
        adv, ret = torch.empty_like(value), torch.empty_like(value)
        T, N = value.shape
        if adv.numel():
            _gae_kernel[_grid(N)](reward, value, next_value, terminated, truncated, adv, ret,
                                  T, N, gamma, lam, **_meta(value.dtype))
        ctx.save_for_backward(terminated, truncated)
        ctx.gamma, ctx.lam = gamma, lam
        return adv, ret

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_adv, grad_ret):
        terminated, truncated = ctx.saved_tensors
        term = terminated.bool()
        cont = torch.logical_or(term, truncated.bool()).logical_not_()
        grad_delta = adjoint_scan(grad_adv + grad_ret, cont, ctx.gamma * ctx.lam)
        return (*reference.gae_input_grads(ctx, grad_delta, grad_ret, term), None, None, None, None)


class LambdaReturns(torch.autograd.Function):
    """Triton TD(lambda) returns; differentiable in reward and next_value."""

    @staticmethod
    def forward(ctx, reward, next_value, terminated, truncated, gamma, lam):
        reward, next_value = reward.contiguous(), next_value.contiguous()
        terminated, truncated = terminated.contiguous(), truncated.contiguous()
        out = torch.empty_like(next_value)
        T, N = next_value.shape
        if out.numel():
            _lambda_return_kernel[_grid(N)](reward, next_value, terminated, truncated, out,
                                            T, N, gamma, lam, **_meta(next_value.dtype))
        ctx.save_for_backward(terminated, truncated)
        ctx.gamma, ctx.lam = gamma, lam
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        terminated, truncated = ctx.saved_tensors
        term = terminated.bool()
        cont = reference.lambda_cont(term, truncated)
        grad_b = adjoint_scan(grad, cont, ctx.gamma * ctx.lam)
        return (*reference.lambda_input_grads(ctx, grad_b, term, cont), None, None, None, None)


class DiscountCumsum(torch.autograd.Function):
    """Triton masked discounted cumsum; differentiable in x."""

    @staticmethod
    def forward(ctx, x, gamma, mask, lengths):
        x = x.contiguous()
        out = torch.empty_like(x)
        T, N = x.shape
        if mask is not None:
            mode, valid = STEP_MASK, mask.contiguous()
        elif lengths is not None:
            mode, valid = LENGTHS, lengths.contiguous()
        else:
            mode, valid = NO_MASK, x
        if out.numel():
            _discount_cumsum_kernel[_grid(N)](x, valid, out, T, N, gamma, MASK_MODE=mode,
                                              **_meta(x.dtype))
        ctx.save_for_backward(mask, lengths)
        ctx.gamma = gamma
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mask, lengths = ctx.saved_tensors
        valid = reference.valid_steps(grad.shape, mask, lengths, grad.device)
        valid = reference.all_steps(grad) if valid is None else valid
        return torch.where(valid, adjoint_scan(grad, valid, ctx.gamma), 0.0), None, None, None
