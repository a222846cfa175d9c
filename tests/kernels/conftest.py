"""Fixtures for the kernel tests; the Triton kernels run on CPU under the Triton interpreter
(TRITON_INTERPRET=1, set by tests/conftest.py before anything imports triton; repeated here for
runs that start from this folder's files alone)."""

import importlib
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from rlx.kernels import dispatch  # noqa: E402


@pytest.fixture
def run():
    """`run(backend, fn, *args)`: call fn under backend "torch" or "triton", then restore."""

    def call(backend, fn, *args, **kwargs):
        dispatch.set_backend(backend)
        try:
            return fn(*args, **kwargs)
        finally:
            dispatch.set_backend(None)

    return call


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the two-pass segment path: a segment longer than 8 rows is split over programs."""
    monkeypatch.setattr(importlib.import_module("rlx.kernels.triton_segment"), "CHUNK_ROWS", 8)


@pytest.fixture
def small_tiles(monkeypatch):
    """[8, 4] time tiles: the interpreter's scan costs ~0.3 ms per tile element, and small
    tiles give many tiles and programs (carries, edge masks) on small inputs."""
    module = importlib.import_module("rlx.kernels.triton_gae")
    monkeypatch.setattr(module, "BLOCK_T", 8)
    monkeypatch.setattr(module, "BLOCK_N", 4)
