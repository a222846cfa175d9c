"""Run directories, metrics (JSON lines + the loggers of `trainer.loggers`), summaries and the
progress bar.

A run writes `runs/<algo>/<env>/<YYYYmmdd-HHMMSS>-s<seed>/` holding `config.yaml`,
`metrics.jsonl` (one `{"step": ..., "<ns>/<name>": value, ...}` object per line, always),
TensorBoard events (`tb/`), `checkpoints/` and, at the end, `summary.json`. `trainer.loggers`
adds Weights & Biases (`wandb`, its files under `<run>/wandb/`; `WANDB_MODE=offline` and
`WANDB_PROJECT` as W&B reads them) and MLflow (`mlflow`, to `MLFLOW_TRACKING_URI` or a file
store at `<run>/mlruns`, experiment `MLFLOW_EXPERIMENT_NAME` or `rlx`; a file store is opted
into with `MLFLOW_ALLOW_FILE_STORE=true` unless that is set): each gets every numeric value of every `metrics.jsonl` row, at its step.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from rlx.core.checkpoint import atomic_write
from rlx.core.errors import ConfigError, RunLocked
from rlx.core.trainer_config import LOGGERS

_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow-skinny")}  # logger -> (module, pip package)


def check_loggers(names: Sequence[str]) -> None:
    """One ConfigError line for an unknown logger or a logger whose package is missing (run
    before anything is written)."""
    import importlib.util

    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"unknown logger {name!r} in trainer.loggers; choose from {', '.join(LOGGERS)}")
        module, package = _PACKAGES.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"trainer.loggers has {name} but the {module} package is not installed: "
                              f"pip install {package} (or pip install 'rlx[{name}]'), or drop {name} from trainer.loggers")


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
    """Writes metrics to `metrics.jsonl` and the loggers asked for (TensorBoard, W&B, MLflow).
    With `run_dir=None` it only keeps the latest values in memory (for learners used from plain
    scripts and tests). `config` (the resolved run config as plain data) goes to W&B and MLflow."""

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True, resume_step: int | None = None,
                 loggers: Sequence[str] = (), config: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.latest: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self._file = self._tb = None
        self._sinks: list[Any] = []  # W&B / MLflow: log(step, scalars) and close()
        if self.run_dir is None:
            return
        check_loggers(loggers)
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
        if "wandb" in loggers:
            self._sinks.append(_WandbSink(self.run_dir, config or {}))
        if "mlflow" in loggers:
            self._sinks.append(_MlflowSink(self.run_dir, config or {}))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        self.latest.update(row)
        self.history.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
        if self._tb is None and not self._sinks:
            return
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        for sink in self._sinks:
            sink.log(int(step), scalars)

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
        for sink in self._sinks:
            sink.close()
        self._sinks = []


def _run_id(run_dir: Path) -> str:
    """A stable id per run directory, so a resumed run continues the same W&B / MLflow run."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


class _WandbSink:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import os

        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlx"), dir=str(run_dir), name=run_dir.name,
                              id=_run_id(run_dir), resume="allow", config=config, reinit="create_new")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _MlflowSink:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import os

        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:  # MLflow >= 3.? asks for an opt-in to its file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlx")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        tag = {"rlx.run_dir": str(run_dir.resolve())}
        found = self.client.search_runs([experiment_id], f"tags.`rlx.run_dir` = '{tag['rlx.run_dir']}'", max_results=1)
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, "RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, tags=tag, run_name=run_dir.name).info.run_id
            flat = _flatten(config)
            for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in list(flat.items())[i:i + 100]])

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


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
