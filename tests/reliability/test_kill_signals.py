"""Real processes: kill -9 at a checkpoint and resume (IQL, GFlowNet, CPPO; PPO is tests/test_resume.py),
SIGTERM behaves like Ctrl-C, and a killed sweep takes its workers with it and resumes cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from rlx.core.logging import read_metrics

ROOT = Path(__file__).parents[2]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0", "trainer.eval_episodes=1"]
RUNS = {
    "iql": (["algo=iql", "env=pendulum-tiny", "algo.hidden=[16,16]", "algo.batch_size=32", "trainer.checkpoint_every=50",
             *QUIET], 4000, 100),
    "gflownet": (["algo=gflownet", "env=hypergrid_small", "algo.hidden=16", "algo.batch_size=8", "algo.eval_samples=100",
                  "trainer.checkpoint_every=5", *QUIET], 8000, 80),
}


def _env(data_dir=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if data_dir is not None:
        env["RLX_DATA"] = str(data_dir)
    return env


def _ckpt_steps(run_dir):
    path = run_dir / "checkpoints" / "last.pt"
    try:
        return torch.load(path, weights_only=True)["loop"]["steps"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def _start_and_wait(args, run_dir, env, min_steps, timeout=180):
    proc = subprocess.Popen([sys.executable, "-m", "rlx.train", *args, f"trainer.run_dir={run_dir}"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and _ckpt_steps(run_dir) < min_steps:
        time.sleep(0.2)
    assert proc.poll() is None, f"run ended before it could be stopped: {proc.stderr.read()[-500:]}"
    return proc


@pytest.mark.parametrize("algo", sorted(RUNS))
def test_kill_9_and_resume(algo, tmp_path, offline_data):
    args, total, min_steps = RUNS[algo]
    args = [*args, f"trainer.total_steps={total}"]
    run_dir, env = tmp_path / "run", _env(offline_data)
    proc = _start_and_wait(args, run_dir, env, min_steps)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _ckpt_steps(run_dir)
    assert 0 < saved < total
    out = subprocess.run([sys.executable, "-m", "rlx.train", *args, f"trainer.resume={run_dir}"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-800:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    key = next(k for k in rows[-2] if k.startswith("loss/"))
    steps = [r["step"] for r in rows if key in r]
    assert all(a < b for a, b in zip(steps, steps[1:])), "metrics.jsonl must read as one run"
    assert json.loads((run_dir / "summary.json").read_text())["step"] >= total


# a tiny text stream (its cache is built by the first process, about 10 s) and 2 tasks x 4 iterations
CPPO_STREAM = {"num_tasks": 2, "corpus_size": 300, "sft_steps": 40, "pairs_per_task": 200, "rm_steps": 40}
CPPO = ["algo=cppo", "algo.retention=learned", "algo.compare_ppo=false", "algo.samples_per_task=128",
        "algo.batch_size=32", "algo.eval_samples=16", "algo.d_model=32", "trainer.checkpoint_every=1",
        *(f"env.kwargs.{k}={v}" for k, v in CPPO_STREAM.items()), *QUIET]


def test_cppo_kill_9_and_resume_finishes_the_stream(tmp_path):
    args, run_dir, env = [*CPPO, f"env.kwargs.cache_dir={tmp_path / 'cache'}"], tmp_path / "run", _env()
    proc = _start_and_wait(args, run_dir, env, 32)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _ckpt_steps(run_dir)
    assert 0 < saved < 256, saved
    out = subprocess.run([sys.executable, "-m", "rlx.train", *args, f"trainer.resume={run_dir}"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-800:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    for key in ("loss/policy", "eval/gold_mean"):
        steps = [r["step"] for r in rows if key in r]
        assert steps and all(a < b for a, b in zip(steps, steps[1:])), (key, steps)
    assert [r["step"] for r in rows if "eval/gold_mean" in r] == [128, 256]  # one R row per stage, none lost
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 256 and all(f"final/R_{i}_{j}" in summary for i in range(2) for j in range(2))
    assert "R[i, j] = gold reward on task j after stage i" in out.stdout
    assert (run_dir / "plots" / "r_matrix.png").stat().st_size > 1000


def test_sigterm_checkpoints_and_exits_143(tmp_path):
    args = ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=1000000",
            "trainer.checkpoint_every=5", *QUIET]
    run_dir = tmp_path / "run"
    proc = _start_and_wait(args, run_dir, _env(), 160)
    before = _ckpt_steps(run_dir)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err[-500:]
    assert "terminated (SIGTERM); checkpoint saved" in err.strip().splitlines()[-1]
    assert _ckpt_steps(run_dir) > before  # saved at the signal, not only at the last periodic checkpoint
    assert _ckpt_steps(run_dir) == read_metrics(run_dir / "metrics.jsonl")[-1]["step"]


def test_killed_sweep_takes_its_workers_and_reruns_cleanly(tmp_path):
    sweep_dir = tmp_path / "sweep"
    grid = ["-m", "algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=1600",
            "trainer.checkpoint_every=2", "seed=0,1,2", "launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}", *QUIET]
    parent = subprocess.Popen([sys.executable, "-m", "rlx.train", *grid], env=_env(), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(sweep_dir.rglob("last.pt"))) < 2:
        time.sleep(0.3)
    workers = psutil.Process(parent.pid).children(recursive=True)
    assert workers and len(list(sweep_dir.rglob("last.pt"))) >= 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, "pool workers outlived their sweep"
    out = subprocess.run([sys.executable, "-m", "rlx.train", *grid],
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-800:]
    rows = [json.loads(line) for line in (sweep_dir / "sweep.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {r["status"] for r in rows} == {"done"}
    for row in rows:
        metrics = read_metrics(Path(row["run_dir"]) / "metrics.jsonl")
        steps = [r["step"] for r in metrics if "loss/value" in r]  # (the final evaluation shares the last step)
        assert steps == list(range(32, 1601, 32))
