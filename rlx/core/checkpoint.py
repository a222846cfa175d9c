"""Checkpoints: written atomically (temp file + fsync + rename), so a crash or Ctrl-C
mid-write never leaves a truncated file where a good one was.

Every `.pt` file rlx reads (checkpoints, cached reward models, base models, classifiers) is
loaded with `torch.load(weights_only=True)`: tensors and plain Python types only, so a
crafted file cannot run code. Such a file is refused with one `UnsafeFileError` line."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlx.core.errors import UnsafeFileError


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Call `write_fn(file_object)` on a temp file beside `path`, then rename it over `path`.
    The file gets the permissions `open(path, "w")` would give it (0666 minus the umask, e.g.
    0644), not the 0600 of `tempfile.mkstemp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a file holding anything else (code, arbitrary
    objects) or not a torch file at all is refused with one line naming it."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, KeyError) as e:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed| Please|$)", str(e), re.M)
        why = found.group(1).strip() if found else " ".join(str(e).split())[:200] or type(e).__name__
        raise UnsafeFileError(f"refusing to load {path}: it is not a plain-tensor torch file ({why}); "
                              "rlx files hold tensors and plain types only, so delete or regenerate it") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return safe_load(path, map_location)


def to_plain(obj: Any) -> Any:
    """Numpy arrays and scalars inside nested dicts/lists/tuples as tagged tensors, so a state
    with numpy in it (env snapshots, episode counters) saves under `weights_only=True`;
    `from_plain` restores them with their dtypes."""
    if isinstance(obj, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return {"__numpy_scalar__": torch.from_numpy(np.asarray(obj).copy())}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """The inverse of `to_plain`."""
    if isinstance(obj, dict):
        if obj.keys() == {"__numpy__"}:
            return obj["__numpy__"].numpy().copy()
        if obj.keys() == {"__numpy_scalar__"}:
            return obj["__numpy_scalar__"].numpy()[()]
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def latest_checkpoint(run_dir: str | os.PathLike) -> Path:
    """`<run_dir>/checkpoints/last.pt`, with a clear error when the run has none."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {path} does not exist (is {run_dir} an rlx run directory that saved a checkpoint?)"
        )
    return path
