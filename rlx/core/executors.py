"""Executors: run a function over a list of jobs, locally or on a Ray cluster.

`Executor.map(fn, jobs) -> iterator of (job, result | exception)`; a failed job yields its
exception and the others go on. `rlx.sweep` runs grid points through them and attribution
(`rlx.algos.attribution`) its K + 1 explanation trainings; new ones register in `EXECUTORS`
and callers do not change.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

__all__ = ["Executor", "InProcessExecutor", "ProcessExecutor", "RayExecutor", "EXECUTORS", "PARENT_GONE"]


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], jobs: list[Any]) -> Iterator[tuple[Any, Any]]:
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


PARENT_GONE = threading.Event()  # set in a pool worker whose sweep died: finish no job, take no other


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
        PARENT_GONE.set()
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
