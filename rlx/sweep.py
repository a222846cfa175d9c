"""Grid sweeps: `python -m rlx.train -m algo=iql env=hopper-medium,walker2d-medium
reward=original,zero,random,negative seed=0,1,2` (DESIGN.md section 7).

Comma-separated values (and Hydra's `range(a,b)` / `choice(...)`) expand into the cartesian
grid. Each point is composed and validated with `rlx.train.compose_config` before anything
runs; its run directory is `<sweep dir>/<hash>` where the hash is taken over the resolved
config, so a rerun of the same command skips finished runs (`summary.json` present) and
continues interrupted ones from their last checkpoint. A failure is written to
`<run>/error.txt` and does not stop the sweep. `<sweep dir>/sweep.jsonl` lists every point with its overrides and status.

Sweep-level keys (not part of a run's config):
* `hydra.sweep.dir=<dir>`: where runs go (default `<trainer.root>/sweeps/<hash of the command>`);
* `launcher=process|inprocess|ray` (default process), `launcher.n_jobs=<n>` (default 2);
  Ray also takes `launcher.address=auto|ray://...`, `launcher.cpus_per_run`, `launcher.gpus_per_run`.

Executors implement `Executor.map(fn, jobs) -> iterator of (job, result | exception)`; new
ones (Ray) register in `EXECUTORS` and callers do not change.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Job", "Executor", "InProcessExecutor", "ProcessExecutor", "RayExecutor", "EXECUTORS", "expand", "plan", "run_sweep", "main"]

VOLATILE = ("trainer.run_dir", "trainer.root", "trainer.resume", "trainer.progress")  # excluded from the config hash


@dataclass(frozen=True)
class Job:
    """One point of the grid: its overrides and the directory it writes."""

    overrides: tuple[str, ...]
    run_dir: str
    key: str


class Executor(Protocol):
    def map(self, fn: Callable[[Job], Any], jobs: list[Job]) -> Iterator[tuple[Job, Any]]:
        """Run `fn` on every job; yield (job, result) or (job, exception) as each finishes."""


class InProcessExecutor:
    """Runs jobs one after another in this process (debugging, tests)."""

    def __init__(self, n_jobs: int = 1):
        del n_jobs

    def map(self, fn, jobs):
        for job in jobs:
            try:
                yield job, fn(job)
            except Exception as e:  # a failed run is recorded, the sweep goes on
                yield job, e


def _worker_init(parent: int | None = None) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)  # n_jobs processes share the cores
    if parent is not None:
        _die_with_parent(parent)


_PARENT_GONE = threading.Event()  # set in a pool worker whose sweep died: finish no job, take no other


def _die_with_parent(parent: int) -> None:
    """A pool worker stops when the sweep that started it dies (even by kill -9): SIGTERM to
    itself, which the run handles like Ctrl-C (checkpoint, then exit), so a rerun resumes it."""
    import signal

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, lambda *_: os._exit(143))  # a second signal: exit at once
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupt)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _PARENT_GONE.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # time to write the checkpoint; then go even if the main thread is stuck
        os._exit(143)

    threading.Thread(target=watch, daemon=True, name="rlx-parent-watch").start()


class ProcessExecutor:
    """A local process pool (spawned workers, one torch thread each)."""

    def __init__(self, n_jobs: int = 2):
        self.n_jobs = max(int(n_jobs), 1)

    def map(self, fn, jobs):
        import multiprocessing as mp

        with ProcessPoolExecutor(self.n_jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, job): job for job in jobs}
            for fut in as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except Exception as e:
                    yield futures[fut], e


class RayExecutor:
    """Each run is a Ray task (`launcher=ray`). With `launcher.address` unset it starts a local
    Ray with `n_jobs` CPUs; `launcher.address=auto` or `ray://host:10001` joins an existing
    cluster, where rlx must be importable on the workers (installed, or shipped with a
    `runtime_env`). `launcher.cpus_per_run` / `launcher.gpus_per_run` (fractions allowed) are
    the resources Ray reserves for each run, so it packs runs onto the cluster's GPUs."""

    def __init__(self, n_jobs: int = 2, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float = 0.0):
        self.n_jobs, self.address = max(int(n_jobs), 1), address or None
        self.cpus_per_run, self.gpus_per_run = float(cpus_per_run), float(gpus_per_run)

    def map(self, fn, jobs):
        try:
            import ray
        except ImportError:
            raise ValueError("launcher=ray needs Ray: pip install 'rlx[dist]' (or pip install 'ray[default]')") from None
        if not ray.is_initialized():
            local = {} if self.address else {"num_cpus": self.n_jobs}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}, **local)
        task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(_ray_call)
        pending = {task.remote(fn, job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield job, ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the run's own exception, not Ray's wrapper
                    yield job, e.as_instanceof_cause()
                except ray.exceptions.RayError as e:  # worker died, cluster lost, ...
                    yield job, e


def _ray_call(fn, job):
    import torch

    torch.set_num_threads(1)
    return fn(job)


EXECUTORS: dict[str, Callable[..., Executor]] = {"process": ProcessExecutor, "inprocess": InProcessExecutor,
                                                 "ray": RayExecutor}


def expand(overrides: list[str]) -> list[list[str]]:
    """The cartesian grid of sweep overrides (`k=a,b`, `range`, `choice`); others are kept as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes: list[list[str]] = []
    for ov, text in zip(parsed, overrides):
        if ov.is_sweep_override():
            axes.append([f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()])
        else:
            axes.append([text])
    return [list(point) for point in itertools.product(*axes)]


def config_hash(cfg) -> str:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.structured(cfg))
    for dotted in VOLATILE:
        group, key = dotted.split(".")
        node[group].pop(key, None)
    return hashlib.sha1(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _split_sweep_keys(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    run_keys, sweep_keys = [], {}
    for o in overrides:
        key, _, value = o.partition("=")
        if key in ("hydra.sweep.dir", "launcher") or key.startswith("launcher."):
            sweep_keys[key] = value
        else:
            run_keys.append(o)
    return run_keys, sweep_keys


def plan(overrides: list[str]) -> tuple[Path, list[Job], dict[str, str]]:
    """Expand, validate every point (raises ConfigError before anything runs), assign run dirs."""
    from rlx.train import compose_config

    run_keys, sweep_keys = _split_sweep_keys(overrides)
    points = expand(run_keys)
    first = compose_config(points[0])
    command_hash = hashlib.sha1(" ".join(sorted(run_keys)).encode()).hexdigest()[:8]
    sweep_dir = Path(sweep_keys.get("hydra.sweep.dir") or Path(first.trainer.root) / "sweeps" / command_hash)
    jobs, seen = [], set()
    for point in points:
        key = config_hash(compose_config(point))
        if key in seen:
            continue
        seen.add(key)
        jobs.append(Job(tuple(point), str(sweep_dir / key), key))
    return sweep_dir, jobs, sweep_keys


def run_job(job: Job) -> dict[str, Any]:
    """Compose and run one point in its run dir; failures leave `error.txt` and re-raise."""
    from rlx.train import compose_config, run

    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").unlink(missing_ok=True)
    # an interrupted run continues from its last checkpoint (its metrics are cut back to it)
    where = "trainer.resume" if (run_dir / "checkpoints" / "last.pt").is_file() else "trainer.run_dir"
    overrides = [*job.overrides, f"{where}={run_dir}", "trainer.progress=false"]
    try:
        return run(compose_config(overrides))
    except BaseException:
        from rlx.core.checkpoint import atomic_write

        text = traceback.format_exc()
        atomic_write(run_dir / "error.txt", lambda f: f.write(text.encode()))
        if _PARENT_GONE.is_set():
            os._exit(143)  # the pool would hand this worker its next queued point
        raise


def run_sweep(overrides: list[str], executor: str | None = None, n_jobs: int | None = None,
              log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Run the grid; returns {"done": [...], "failed": [...], "skipped": [...]} of run dirs."""
    sweep_dir, jobs, sweep_keys = plan(overrides)
    executor = executor or sweep_keys.get("launcher", "process")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown launcher={executor!r}; choose one of {', '.join(EXECUTORS)}")
    n_jobs = n_jobs or int(sweep_keys.get("launcher.n_jobs", 2))
    options = {k.split(".", 1)[1]: _launcher_value(v) for k, v in sweep_keys.items()
               if k.startswith("launcher.") and k != "launcher.n_jobs"}
    try:
        pool = EXECUTORS[executor](n_jobs, **options)
    except TypeError:
        raise ValueError(f"launcher={executor} does not take {', '.join('launcher.' + k for k in options)}") from None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (Path(j.run_dir) / "summary.json").is_file()]
    status = {"done": [], "failed": [], "skipped": [j.run_dir for j in jobs if j not in todo]}
    log(f"rlx.sweep: {len(jobs)} runs in {sweep_dir} ({len(status['skipped'])} finished before, {len(todo)} to run, "
        f"launcher={executor}, n_jobs={n_jobs})")
    records = {j.key: {"key": j.key, "overrides": list(j.overrides), "run_dir": j.run_dir, "status": "skipped"}
               for j in jobs}
    start = time.time()
    for job, result in pool.map(run_job, todo):
        ok = not isinstance(result, BaseException)
        status["done" if ok else "failed"].append(job.run_dir)
        records[job.key]["status"] = "done" if ok else "failed"
        if not ok:
            records[job.key]["error"] = f"{type(result).__name__}: {result}"
        log(f"  [{len(status['done']) + len(status['failed'])}/{len(todo)}] {'done' if ok else 'FAILED'} "
            f"{' '.join(job.overrides)}" + ("" if ok else f": {type(result).__name__}: {result}"))
    from rlx.core.checkpoint import atomic_write

    text = "".join(json.dumps(r) + "\n" for r in records.values())
    atomic_write(sweep_dir / "sweep.jsonl", lambda f: f.write(text.encode()))
    log(f"rlx.sweep: done {len(status['done'])}, failed {len(status['failed'])}, skipped {len(status['skipped'])} "
        f"in {time.time() - start:.0f}s; report: python -m rlx.report {sweep_dir}")
    return status


def _launcher_value(text: str) -> Any:
    """`launcher.*` values from the command line: numbers as numbers, null as None."""
    if text in ("null", "None", ""):
        return None
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def main(overrides: Iterable[str]) -> int:
    """`rlx.train -m` entry: 0 when every run finished, 1 when some failed, 2 on a config error."""
    from rlx.train import ConfigError

    try:
        status = run_sweep(list(overrides))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"rlx.sweep: error: {e}", file=sys.stderr)
        return 2
    return 1 if status["failed"] else 0
