"""Compile every rlx Triton kernel for an H100 (sm_90) without a GPU: Triton's front end, its
GPU passes, LLVM and ptxas all run on the CPU. Catches what the interpreter does not check
(non-constexpr globals, types, layouts, register spills). Run in a process without
TRITON_INTERPRET; prints one line per kernel variant, exits non-zero on the first failure.

    python -m tests.kernels.compile_sm90
"""

import importlib
import os
import re
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_sm90 needs TRITON_INTERPRET unset: the kernels must be JIT functions")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

gae = importlib.import_module("rlx.kernels.triton_gae")
segment = importlib.import_module("rlx.kernels.triton_segment")

F32, TIME = "*fp32", dict(BLOCK_T=gae.BLOCK_T, BLOCK_N=gae.BLOCK_N)


def variants():
    """(kernel, runtime signature, constexprs, launch options) for each specialization used."""
    scan = dict(T="i32", N="i32")
    yield gae._gae_kernel, dict(reward=F32, value=F32, next_value=F32, terminated="*i1",
                                truncated="*u8", adv=F32, ret=F32, **scan, gamma="fp32",
                                lam="fp32"), dict(ACC=tl.float32, **TIME), {}
    yield gae._gae_kernel, dict(reward="*bf16", value="*bf16", next_value="*bf16",
                                terminated="*fp32", truncated="*i1", adv="*bf16", ret="*bf16",
                                **scan, gamma="fp32", lam="fp32"), dict(ACC=tl.float32, **TIME), {}
    yield gae._lambda_return_kernel, dict(reward=F32, next_value=F32, terminated="*i1",
                                          truncated="*i1", out=F32, **scan, gamma="fp32",
                                          lam="fp32"), dict(ACC=tl.float32, **TIME), {}
    for mode, valid in [(gae.NO_MASK, F32), (gae.STEP_MASK, "*i1"), (gae.LENGTHS, "*i64")]:
        yield gae._discount_cumsum_kernel, dict(x=F32, valid=valid, out=F32, **scan, gamma="fp32"), \
            dict(MASK_MODE=mode, ACC=tl.float32, **TIME), {}
    yield gae._adjoint_scan_kernel, dict(grad="*fp64", cont="*i1", out="*fp64", **scan, scale="fp32"), \
        dict(ACC=tl.float64, **TIME), {}
    rows = dict(rows="*i64")
    for op, M, items, F in [(segment.SUM, 1 << 20, 1 << 16, 1), (segment.MAX, 1 << 16, 1 << 10, 64),
                            (segment.LSE, 1 << 20, 1 << 9, 1), (segment.LSE, 1 << 20, 1 << 16, 1),
                            (segment.LSE, 1 << 16, 1 << 12, 16)]:
        group, block_m, warps, _ = segment._tiling(M, items, F)
        yield segment._segment_reduce_kernel, dict(x=F32, **rows, out=F32, n_items="i32", F="i32"), \
            dict(OP=op, ACC=tl.float32, GROUP=group, BLOCK_M=block_m), dict(num_warps=warps)
    group, block_m, warps, _ = segment._tiling(1 << 20, 1 << 16, 1)
    yield segment._segment_sub_kernel, dict(x="*fp16", **rows, item_seg="*i64", lse=F32, out="*fp16",
                                            n_items="i32", F="i32"), \
        dict(ACC=tl.float32, GROUP=group, BLOCK_M=block_m), dict(num_warps=warps)
    for gumbel, gather, M, items in [(True, False, 1 << 20, 1 << 16), (False, True, 1 << 16, 1 << 16),
                                     (True, False, 1 << 20, 1 << 9)]:
        group, block_m, warps, _ = segment._tiling(M, items, 1)
        yield segment._segment_argmax_kernel, dict(scores=F32, noise=F32, row_of="*i64", **rows,
                                                   best_score=F32, best_row="*i64", n_items="i32"), \
            dict(GUMBEL=gumbel, GATHER=gather, GROUP=group, BLOCK_M=block_m), dict(num_warps=warps)
    for F in (1, 16):
        block_k, block_f = segment.scatter_tiling(F)
        yield segment._scatter_add_kernel, dict(src=F32, index="*i64", out=F32, K="i32", F="i32",
                                                dim_size="i32"), dict(BLOCK_K=block_k, BLOCK_F=block_f), {}


def resource_usage(cubin: bytes) -> str:
    """cuobjdump's `REG:.. STACK:.. SHARED:.. LOCAL:..` line for a cubin (STACK/LOCAL > 0: spills)."""
    tool = triton.knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    return re.search(r"REG:.*", out.stdout).group(0)


def main():
    target = GPUTarget("cuda", 90, 32)
    for kernel, signature, constexprs, options in variants():
        source = ASTSource(kernel, {**signature, **{k: "constexpr" for k in constexprs}}, constexprs)
        compiled = triton.compile(source, target=target, options=options or None)
        flags = {k: (v.value if isinstance(v, tl.constexpr) else v) for k, v in constexprs.items()}
        usage = resource_usage(compiled.asm["cubin"])
        first_input = next(iter(signature.values()))
        print(f"{kernel.__name__} {first_input} {flags} {usage}", flush=True)
        if not re.search(r"STACK:0 .*LOCAL:0", usage):
            sys.exit(f"{kernel.__name__} spills to local memory: {usage}")


if __name__ == "__main__":
    main()
