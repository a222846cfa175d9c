"""Backend choice: auto/torch/triton, RLX_KERNELS read per call, set_backend, clear errors."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rlx.kernels as K
from rlx.kernels import dispatch, ops

X, PTR = torch.ones(4), torch.tensor([0, 1, 4])


@pytest.fixture
def triton_calls(monkeypatch):
    """Record which ops reach the Triton path (and let them run)."""
    calls = []
    real = ops._triton

    def spy(name, tensor):
        calls.append(name)
        return real(name, tensor)

    monkeypatch.setattr(ops, "_triton", spy)
    return calls


def test_auto_runs_the_twin_on_cpu(monkeypatch, triton_calls):
    monkeypatch.delenv("RLX_KERNELS", raising=False)
    assert dispatch.get_backend() == "auto"
    K.segment_sum(X, PTR)
    K.gae(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), 0.9, 0.9)
    assert triton_calls == []


def test_env_var_is_read_at_call_time(monkeypatch, triton_calls):
    monkeypatch.setenv("RLX_KERNELS", "triton")
    triton_out = K.segment_sum(X, PTR)
    monkeypatch.setenv("RLX_KERNELS", "torch")
    twin_out = K.segment_sum(X, PTR)
    assert triton_calls == ["triton_segment"]
    assert triton_out.tolist() == twin_out.tolist() == [1.0, 3.0]


def test_set_backend_overrides_env(monkeypatch, triton_calls):
    monkeypatch.setenv("RLX_KERNELS", "triton")
    dispatch.set_backend("torch")
    try:
        K.segment_max(X, PTR)
        assert dispatch.get_backend() == "torch"
    finally:
        dispatch.set_backend(None)
    assert triton_calls == []
    assert dispatch.get_backend() == "triton"


def test_unknown_backend_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="choose one of auto, torch, triton"):
        dispatch.set_backend("cuda")
    monkeypatch.setenv("RLX_KERNELS", "fast")
    with pytest.raises(ValueError, match="RLX_KERNELS='fast' is not one of auto, torch, triton"):
        K.segment_sum(X, PTR)


def test_triton_on_cpu_without_interpreter_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("RLX_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="set TRITON_INTERPRET=1") as err:
        K.segment_sum(X, PTR)
    assert "\n" not in str(err.value)


def test_gae_stays_the_function_after_importing_its_triton_module():
    importlib.import_module("rlx.kernels.triton_gae")
    import rlx.kernels.triton_gae  # noqa: F401  (binds the package attribute rlx.kernels.triton_gae only)

    assert K.gae is ops.gae
    from rlx.kernels.triton_gae import GAE  # the submodule has a name of its own

    assert GAE.__name__ == "GAE"


@pytest.mark.parametrize("first_import", ["rlx.kernels.triton_segment", "triton"])
def test_kernels_built_without_interpreter_refuse_cpu_tensors(first_import):
    # Both orders build kernels that cannot be interpreted: the kernel module itself, or only
    # triton (as tensordict does), imported before TRITON_INTERPRET=1 is set.
    code = (
        "import importlib, os, torch, rlx.kernels as K\n"
        f"importlib.import_module({first_import!r})\n"
        "os.environ.update(TRITON_INTERPRET='1', RLX_KERNELS='triton')\n"
        "K.segment_sum(torch.ones(3), torch.tensor([0, 3]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "RLX_KERNELS")}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "RuntimeError: rlx.kernels.triton_segment cannot run on CPU tensors: triton was imported without" in proc.stderr
