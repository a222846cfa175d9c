"""Run directories, metrics (JSON lines + TensorBoard), summaries and the progress bar.

A run writes `runs/<algo>/<env>/<YYYYmmdd-HHMMSS>-s<seed>/` holding `config.yaml`,
`metrics.jsonl` (one `{"step": ..., "<ns>/<name>": value, ...}` object per line),
TensorBoard events, `checkpoints/` and, at the end, `summary.json`.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from rlx.core.checkpoint import atomic_write
from rlx.core.errors import RunLocked


def make_run_dir(root: str | Path, algo: str, env: str, seed: int) -> Path:
    """A fresh `root/algo/env/<time>-s<seed>` directory (suffixed if two runs start in the same second)."""
    # path-like names (".", "..", "/abs", "a/../b") cannot leave root: no separators, no leading dots
    safe_env = re.sub(r"[^A-Za-z0-9_.=-]+", "_", env).lstrip(".") or "env"
    base = Path(root) / algo / safe_env / f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    path.mkdir(parents=True)
    return path


def lock_run_dir(run_dir: Path) -> int:
    """Hold an exclusive advisory lock (flock) on the run directory itself while this process
    writes it; a second writer (a rerun while the first still runs, a stray sweep worker) gets
    `RunLocked` at once. No file is created; the OS releases the lock when the process dies,
    even by kill -9. Returns the descriptor (`os.close` it to release)."""
    import fcntl
    import os

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunLocked(f"run directory {run_dir} is being written by another process; wait for it to finish "
                        "or stop it (a run directory has one writer)") from None
    return fd


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a `metrics.jsonl`; a torn line (a kill mid-write) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class RunLogger:
    """Writes metrics to `metrics.jsonl` and TensorBoard. With `run_dir=None` it only keeps
    the latest values in memory (for learners used from plain scripts and tests)."""

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.latest: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._file = self._tb = None
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        if resume_step is not None and path.exists():
            # drop what was logged after the checkpoint we resume from (and a torn last line), so
            # the file reads as one run; resume_step=-1 (a restart from scratch) drops everything
            keep = [json.dumps(r) for r in read_metrics(path) if r["step"] <= resume_step]
            atomic_write(path, lambda f: f.write("".join(k + "\n" for k in keep).encode()))
        self._file = open(path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge events after the resume step; the resume step itself stays, as in metrics.jsonl
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.latest.update(row)
        self.history.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def write_summary(self, summary: dict[str, Any]) -> Path | None:
        if self.run_dir is None:
            return None
        text = json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2, sort_keys=True)
        return atomic_write(self.run_dir / "summary.json", lambda f: f.write(text.encode()))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """A tqdm bar over the loop's step budget showing the key metric; silent when disabled
    or when stderr is not a terminal and `force` is off."""

    def __init__(self, total: int, desc: str, enabled: bool = True, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr,
                            mininterval=0.5, disable=None if not sys.stderr.isatty() else False)

    def update(self, n: int, **postfix: Any) -> None:
        if self.bar is None:
            return
        if postfix:
            self.bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
