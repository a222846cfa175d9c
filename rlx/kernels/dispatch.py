"""Backend selection for `rlx.kernels`: Triton for CUDA tensors, the torch twin otherwise.

The backend is chosen at every call:

* `set_backend(name)` wins when it was called with a name;
* else the environment variable `RLX_KERNELS` (`auto`, `torch` or `triton`, default `auto`),
  read at call time so it can be changed between calls.

`auto` runs Triton when the tensor is on CUDA and `triton` is importable, the torch twin
otherwise. `torch` always runs the twin. `triton` always runs the Triton kernels; on CPU
tensors that is only possible under the Triton interpreter (`TRITON_INTERPRET=1`, set before
the first Triton call imports the kernel modules), which is how the tests exercise them.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")
_override: str | None = None


def set_backend(name: str | None) -> None:
    """Force the backend in this process (`auto`, `torch`, `triton`); `None` defers to `RLX_KERNELS`."""
    global _override
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown rlx.kernels backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _override = name


def get_backend() -> str:
    """The backend in force now: the `set_backend` override, else `RLX_KERNELS`, else `auto`."""
    if _override is not None:
        return _override
    name = os.environ.get("RLX_KERNELS", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"RLX_KERNELS={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def triton_available() -> bool:
    """Whether `triton` can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether an op on `tensor` runs the Triton kernels (True) or the torch twin (False)."""
    backend = get_backend()
    if backend == "torch":
        return False
    if backend == "auto":
        return tensor.is_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("RLX_KERNELS=triton but triton is not installed (pip install 'rlx[kernels]')")
    if not tensor.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "RLX_KERNELS=triton on CPU tensors needs the Triton interpreter: "
            "set TRITON_INTERPRET=1 before the first rlx.kernels call"
        )
    return True
