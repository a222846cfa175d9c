"""Grid sweeps: `python -m rlx.train -m algo=iql env=hopper-medium,walker2d-medium
reward=original,zero,random,negative seed=0,1,2` (docs/architecture.md section 8).

Comma-separated values (and Hydra's `range(a,b)` / `choice(...)`) expand into the cartesian
grid. Each point is composed and validated with the caller's `compose_config` (the CLI's,
`rlx.train.compose_config`) before anything runs; its run directory is `<sweep dir>/<hash>`
where the hash is taken over the resolved config, so a rerun of the same command skips finished
runs (`summary.json` present) and continues interrupted ones from their last checkpoint. A
failure is written to `<run>/error.txt` and does not stop the sweep. `<sweep dir>/sweep.jsonl`
lists every point with its overrides and status.

Sweep-level keys (not part of a run's config):
* `hydra.sweep.dir=<dir>`: where runs go (default `<trainer.root>/sweeps/<hash of the command>`);
* `launcher=process|inprocess|ray` (default process), `launcher.n_jobs=<n>` (default 2);
  Ray also takes `launcher.address=auto|ray://...`, `launcher.cpus_per_run`, `launcher.gpus_per_run`.

The points run through an executor of `rlx.core.executors` (`EXECUTORS[launcher]`). The sweep
does not import the CLI: `python -m rlx.train -m` calls `main(overrides, compose_config, run)`
with its own compose and run functions, and so do scripts (`run_sweep(grid, compose_config, run)`).
From Python (the reproduction scripts): `run_points(list of override lists, sweep_dir, compose_config, run)`
runs an explicit list of runs through the same path and returns each one's summary (or exception) in
order; `plan_points(points, sweep_dir, compose_config)` gives their run dirs without running.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rlx.core.executors import EXECUTORS, PARENT_GONE

Compose = Callable[[list[str]], Any]  # overrides -> validated run config (raises ConfigError)
Run = Callable[[Any], dict[str, Any]]  # run config -> final summary

__all__ = ["Job", "expand", "plan", "plan_points", "run_sweep", "run_points", "main"]

VOLATILE = ("trainer.run_dir", "trainer.root", "trainer.resume", "trainer.progress")  # excluded from the config hash


@dataclass(frozen=True)
class Job:
    """One point of the grid: its overrides and the directory it writes."""

    overrides: tuple[str, ...]
    run_dir: str
    key: str

    def summary(self) -> dict[str, Any] | None:
        """The finished run's summary.json, or None while it has none."""
        path = Path(self.run_dir) / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None


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


def plan(overrides: list[str], compose_config: Compose) -> tuple[Path, list[Job], dict[str, str]]:
    """Expand, validate every point (raises ConfigError before anything runs), assign run dirs."""
    run_keys, sweep_keys = _split_sweep_keys(overrides)
    points = expand(run_keys)
    first = compose_config(points[0])
    command_hash = hashlib.sha1(" ".join(sorted(run_keys)).encode()).hexdigest()[:8]
    sweep_dir = Path(sweep_keys.get("hydra.sweep.dir") or Path(first.trainer.root) / "sweeps" / command_hash)
    jobs = _unique(plan_points(points, sweep_dir, compose_config))
    return sweep_dir, jobs, sweep_keys


def plan_points(points: list[list[str]], sweep_dir: str | Path, compose_config: Compose) -> list[Job]:
    """One job per point, in order (each validated; its run dir `<sweep_dir>/<hash of its resolved config>`):
    where `run_points` would put each run, without running anything."""
    jobs = []
    for point in points:
        key = config_hash(compose_config(point))
        jobs.append(Job(tuple(point), str(Path(sweep_dir) / key), key))
    return jobs


def _unique(jobs: list[Job]) -> list[Job]:
    """The first job of each config (points that resolve to the same config run once)."""
    first: dict[str, Job] = {}
    for job in jobs:
        first.setdefault(job.key, job)
    return list(first.values())


def run_job(job: Job, compose_config: Compose, run: Run) -> dict[str, Any]:
    """Compose and run one point in its run dir; failures leave `error.txt` and re-raise."""
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
        if PARENT_GONE.is_set():
            os._exit(143)  # the pool would hand this worker its next queued point
        raise


def run_sweep(overrides: list[str], compose_config: Compose, run: Run, executor: str | None = None,
              n_jobs: int | None = None, log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Run the grid; returns {"done": [...], "failed": [...], "skipped": [...]} of run dirs."""
    sweep_dir, jobs, sweep_keys = plan(overrides, compose_config)
    options = {k.split(".", 1)[1]: _launcher_value(v) for k, v in sweep_keys.items()
               if k.startswith("launcher.") and k != "launcher.n_jobs"}
    results = _execute(sweep_dir, jobs, partial(run_job, compose_config=compose_config, run=run),
                       executor or sweep_keys.get("launcher", "process"),
                       n_jobs or int(sweep_keys.get("launcher.n_jobs", 2)), options, log)
    status: dict[str, list[str]] = {"done": [], "failed": [], "skipped": []}
    for job in jobs:
        status[results[job.key][0]].append(job.run_dir)
    return status


def run_points(points: list[list[str]], sweep_dir: str | Path, compose_config: Compose, run: Run,
               launcher: str = "process", n_jobs: int = 2, log: Callable[[str], None] = print,
               **options: Any) -> list[tuple[Job, dict[str, Any] | BaseException]]:
    """The scripts' entry: an explicit list of runs (each a list of `key=value` overrides, no grid
    syntax) into `sweep_dir`, through the same path as `run_sweep` (every point validated first,
    finished runs skipped, interrupted ones resumed, failures recorded and the rest run on).
    Returns (job, summary) or (job, exception) for every point, in the order given; a finished
    run's summary is read from its `summary.json`. `options` are the launcher's (`address`, ...)."""
    sweep_dir = Path(sweep_dir)
    jobs = plan_points([list(p) for p in points], sweep_dir, compose_config)
    results = _execute(sweep_dir, _unique(jobs), partial(run_job, compose_config=compose_config, run=run),
                       launcher, n_jobs, options, log)
    return [(job, results[job.key][1]) for job in jobs]


def _execute(sweep_dir: Path, jobs: list[Job], fn: Callable[[Job], dict[str, Any]], executor: str, n_jobs: int,
             options: dict[str, Any], log: Callable[[str], None]) -> dict[str, tuple[str, Any]]:
    """Run the unfinished jobs; {key: (status, summary | exception)}, status done | failed | skipped."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown launcher={executor!r}; choose one of {', '.join(EXECUTORS)}")
    try:
        pool = EXECUTORS[executor](n_jobs, **options)
    except TypeError:
        raise ValueError(f"launcher={executor} does not take {', '.join('launcher.' + k for k in options)}") from None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    finished = {j.key: j.summary() for j in jobs}
    todo = [j for j in jobs if finished[j.key] is None]
    results: dict[str, tuple[str, Any]] = {k: ("skipped", v) for k, v in finished.items() if v is not None}
    log(f"rlx.sweep: {len(jobs)} runs in {sweep_dir} ({len(results)} finished before, {len(todo)} to run, "
        f"launcher={executor}, n_jobs={n_jobs})")
    records = {j.key: {"key": j.key, "overrides": list(j.overrides), "run_dir": j.run_dir, "status": "skipped"}
               for j in jobs}
    start = time.time()
    for count, (job, result) in enumerate(pool.map(fn, todo), 1):
        ok = not isinstance(result, BaseException)
        results[job.key] = ("done" if ok else "failed", result)
        records[job.key]["status"] = "done" if ok else "failed"
        if not ok:
            records[job.key]["error"] = f"{type(result).__name__}: {result}"
        log(f"  [{count}/{len(todo)}] {'done' if ok else 'FAILED'} "
            f"{' '.join(job.overrides)}" + ("" if ok else f": {type(result).__name__}: {result}"))
    from rlx.core.checkpoint import atomic_write

    text = "".join(json.dumps(r) + "\n" for r in records.values())
    atomic_write(sweep_dir / "sweep.jsonl", lambda f: f.write(text.encode()))
    totals = {s: sum(r[0] == s for r in results.values()) for s in ("done", "failed", "skipped")}
    log(f"rlx.sweep: done {totals['done']}, failed {totals['failed']}, skipped {totals['skipped']} "
        f"in {time.time() - start:.0f}s; report: python -m rlx.report {sweep_dir}")
    return results


def _launcher_value(text: str) -> Any:
    """`launcher.*` values from the command line: numbers as numbers, null as None."""
    if text in ("null", "None", ""):
        return None
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def main(overrides: Iterable[str], compose_config: Compose, run: Run) -> int:
    """`rlx.train -m` entry: 0 when every run finished, 1 when some failed, 2 on a config error."""
    from rlx.core.errors import ConfigError

    try:
        status = run_sweep(list(overrides), compose_config, run)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"rlx.sweep: error: {e}", file=sys.stderr)
        return 2
    return 1 if status["failed"] else 0
