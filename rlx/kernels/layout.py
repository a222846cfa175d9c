"""Checked CSR layouts of segment offsets, built once per `ptr` tensor.

Every segment op takes CSR offsets `ptr` [E + 1]. Checking them (ptr[0] = 0, ptr[-1] = M,
non-decreasing) reads the host, and the CPU twins need tensors derived from them (segment
lengths, the segment of every row, a sparse [E, M] matrix of ones for sums). `layout(ptr, M)`
does that work once and keeps the result on the ptr tensor itself, as a Python attribute, so it
lives and dies with the tensor; the tensor's version counter is part of the key, so an in-place
change of ptr (or a call with another M) builds a new layout. A batch structure is thus checked
once however many ops (and backward passes) use it; a new ptr tensor is checked on first use.

`rlx.kernels.ops` checks CPU offsets always and CUDA offsets only when the debug variable
`RLX_CHECK=1` is set (there a check is a device sync per new ptr; the Triton kernels read ptr as
it is).
"""

from __future__ import annotations

import os
import warnings
from functools import cached_property

import torch

_ATTR = "_rlx_segment_layout"
_INT32_ROWS = 2**31 - 1  # int32 sparse indices while M stays below this


def checking() -> bool:
    """Whether `RLX_CHECK=1` asks for ptr checks on CUDA too (read at call time)."""
    return os.environ.get("RLX_CHECK", "") == "1"


class Layout:
    """The checked offsets `ptr` (int64) of E segments over M rows and what the twins derive from
    them, each computed on first use."""

    def __init__(self, ptr: torch.Tensor, M: int):
        self.ptr, self.M, self.E = ptr, M, ptr.numel() - 1
        if int(ptr[0]) != 0 or int(ptr[-1]) != M or bool((self.lengths < 0).any()):
            raise ValueError(f"ptr must rise from 0 to M = {M}, got {ptr[:8].tolist()}...")

    @cached_property
    def lengths(self) -> torch.Tensor:
        """[E] rows per segment."""
        return self.ptr.diff()

    @cached_property
    def nonempty(self) -> torch.Tensor:
        """[E] bool: the segment has rows."""
        return self.lengths > 0

    @cached_property
    def all_nonempty(self) -> bool:
        """Every segment has rows (one host read per layout)."""
        return bool(self.nonempty.all())

    @cached_property
    def ids(self) -> torch.Tensor:
        """[M] segment of every row."""
        segments = torch.arange(self.E, device=self.ptr.device)
        return segments.repeat_interleave(self.lengths, output_size=self.M)

    @cached_property
    def _ones(self) -> dict[torch.dtype, torch.Tensor]:
        return {}

    def sums(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The sparse CSR matrix [E, M] of ones with `ptr` as its row offsets (`S @ x` sums each
        segment), or None where `torch.segment_reduce` serves better: off CPU, for other dtypes
        than fp32/fp64, for no rows or no segments."""
        if self.ptr.device.type != "cpu" or dtype not in (torch.float32, torch.float64) or self.M == 0 or self.E == 0:
            return None
        if dtype not in self._ones:
            index = torch.int32 if self.M < _INT32_ROWS else torch.int64
            cols = torch.arange(self.M, dtype=index)
            with warnings.catch_warnings():  # "sparse CSR support is in beta": mv / mm on it are stable
                warnings.simplefilter("ignore", UserWarning)
                self._ones[dtype] = torch.sparse_csr_tensor(self.ptr.to(index), cols, torch.ones(self.M, dtype=dtype),
                                                            (self.E, self.M), check_invariants=False)
        return self._ones[dtype]


def layout(ptr: torch.Tensor, M: int) -> Layout:
    """The checked layout of integer offsets `ptr` over M rows, cached on `ptr` (see the module
    docstring). Raises ValueError when ptr does not rise from 0 to M."""
    version = None if ptr.is_inference() else ptr._version  # inference tensors have no version counter
    cached = ptr.__dict__.get(_ATTR)
    if cached is not None and version is not None and cached[0] == version and cached[1].M == M:
        return cached[1]
    lay = Layout(ptr if ptr.dtype == torch.int64 else ptr.long(), M)
    if version is not None:
        ptr.__dict__[_ATTR] = (version, lay)
        if lay.ptr is not ptr:  # the int64 copy the twins are handed is known too
            lay.ptr.__dict__[_ATTR] = (lay.ptr._version, lay)
    return lay
