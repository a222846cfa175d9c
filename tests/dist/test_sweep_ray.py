"""Sweeps on Ray (local, 2 CPUs) and resuming an interrupted sweep."""

import json
from pathlib import Path

import pytest

from rlx.sweep import plan, run_sweep
from rlx.train import compose_config, run

TINY = ["algo=ppo", "env=CartPole-v1", "env.num_envs=1", "algo.num_steps=16", "trainer.total_steps=32",
        "trainer.eval_episodes=1", "trainer.eval_every=0", "trainer.tensorboard=false"]


def _status(sweep_dir: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (sweep_dir / "sweep.jsonl").read_text().splitlines()]
    return {" ".join(r["overrides"]): r["status"] for r in rows}


def test_ray_sweep_runs_records_failures_and_resumes(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rlx[dist]')")
    sweep_dir = tmp_path / "sweep"
    grid = [*TINY, "seed=0,1", "env.max_episode_steps=20,-5", f"hydra.sweep.dir={sweep_dir}", "launcher=ray",
            "launcher.n_jobs=2", "launcher.cpus_per_run=1"]
    try:
        status = run_sweep(grid, compose_config, run, log=lambda _: None)
        # max_episode_steps=-5 passes the schema but gymnasium rejects it at run time: recorded, not fatal
        assert len(status["done"]) == 2 and len(status["failed"]) == 2
        for run_dir in status["failed"]:
            assert "max_episode_steps" in (Path(run_dir) / "error.txt").read_text()
        again = run_sweep(grid, compose_config, run, log=lambda _: None)
        assert sorted(again["skipped"]) == sorted(status["done"]) and len(again["failed"]) == 2
    finally:
        ray.shutdown()


def test_interrupted_sweep_reruns_only_unfinished(tmp_path):
    sweep_dir = tmp_path / "sweep"
    grid = [*TINY, "seed=0,1,2,3", f"hydra.sweep.dir={sweep_dir}", "launcher=inprocess"]
    _, jobs, _ = plan(grid, compose_config)
    from rlx.sweep import run_job

    for job in jobs[:2]:  # the first half finished before the interruption
        run_job(job, compose_config, run)
    Path(jobs[2].run_dir).mkdir(parents=True)  # the third was cut off mid-run: no summary.json
    status = run_sweep(grid, compose_config, run, log=lambda _: None)
    assert sorted(status["skipped"]) == sorted(j.run_dir for j in jobs[:2])
    assert sorted(status["done"]) == sorted(j.run_dir for j in jobs[2:])
    assert set(_status(sweep_dir).values()) == {"done", "skipped"}


def test_unknown_launcher_option_is_clear(tmp_path):
    with pytest.raises(ValueError, match="launcher=process does not take launcher.address"):
        run_sweep([*TINY, f"hydra.sweep.dir={tmp_path}", "launcher.address=auto"], compose_config, run,
                  log=lambda _: None)
