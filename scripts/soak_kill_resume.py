"""Soak test: kill -9 runs at random moments, over and over, and resume them until they finish;
then check that nothing was lost or damaged. Prints the figures for docs/reliability.md.

    python scripts/soak_kill_resume.py --kills 300 --algos ppo iql gflownet

Per algorithm, one run is started and killed (SIGKILL, at a uniform random time in
[--min-s, --max-s] after its start) until --kills kills are spent on it, then allowed to finish.
Each restart resumes from `checkpoints/last.pt` when there is one (else starts the directory
over, as `rlx.sweep` does). Afterwards: the checkpoint loads with weights_only=True, every
metric's steps in metrics.jsonl are strictly increasing, the summary is at the full budget.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0", "trainer.eval_episodes=1"]
RUNS = {
    "ppo": ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=6400",
            "trainer.checkpoint_every=2"],
    "iql": ["algo=iql", "env=pendulum-tiny", "algo.hidden=[32,32]", "algo.batch_size=64", "trainer.total_steps=3000",
            "trainer.checkpoint_every=50"],
    "gflownet": ["algo=gflownet", "env=hypergrid_small", "algo.hidden=16", "algo.batch_size=8", "algo.eval_samples=100",
                 "trainer.total_steps=8000", "trainer.checkpoint_every=5"],
}


def check(run_dir: Path, total: int) -> dict[str, int]:
    import torch

    from rlx.core.logging import read_metrics

    out = {"corrupt_checkpoint": 0, "non_increasing_metric": 0, "lost": 0, "torn_lines": 0}
    try:
        torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    except Exception:
        out["corrupt_checkpoint"] = 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = read_metrics(run_dir / "metrics.jsonl")
    out["torn_lines"] = len(lines) - len(rows)
    for key in {k for r in rows for k in r if k.startswith("loss/")}:
        steps = [r["step"] for r in rows if key in r]
        out["non_increasing_metric"] += any(a >= b for a, b in zip(steps, steps[1:]))
    summary = run_dir / "summary.json"
    out["lost"] = int(not summary.is_file() or json.loads(summary.read_text()).get("step", 0) < total)
    return out


def soak(algo: str, kills: int, lo: float, hi: float, work: Path, env: dict[str, str], rng: random.Random,
         scale: int = 1) -> dict:
    total = scale * int(next(a for a in RUNS[algo] if a.startswith("trainer.total_steps=")).split("=")[1])
    args = [*(a for a in RUNS[algo] if not a.startswith("trainer.total_steps=")), f"trainer.total_steps={total}", *QUIET]
    run_dir = work / algo
    done = killed = before_checkpoint = 0
    t0 = time.time()
    while True:
        where = "trainer.resume" if (run_dir / "checkpoints" / "last.pt").is_file() else "trainer.run_dir"
        proc = subprocess.Popen([sys.executable, "-m", "rlx.train", *args, f"{where}={run_dir}"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if killed < kills:
            try:
                proc.wait(timeout=rng.uniform(lo, hi))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                before_checkpoint += not (run_dir / "checkpoints" / "last.pt").is_file()
                continue
        else:
            proc.wait()
        if proc.returncode == 0:
            done = 1
            break
        if killed >= kills:
            break  # a failing run after the kills are spent: reported as lost
    return {"algo": algo, "kills": killed, "kills_before_first_checkpoint": before_checkpoint, "finished": done,
            "wall_s": round(time.time() - t0), **check(run_dir, total)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=300, help="kills per algorithm")
    p.add_argument("--algos", nargs="+", default=["ppo", "iql", "gflownet"], choices=sorted(RUNS))
    p.add_argument("--min-s", type=float, default=2.0)
    p.add_argument("--max-s", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=1, help="multiply each run's budget (a run must outlive its kills)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RLX_DATA": str(work / "data")}
        os.environ["RLX_DATA"] = env["RLX_DATA"]
        from rlx.envs.datasets import make_tiny, save_dataset

        save_dataset("pendulum-tiny", make_tiny(num_steps=4000, seed=0))
        for algo in args.algos:
            print(json.dumps(soak(algo, args.kills, args.min_s, args.max_s, work, env, rng, args.scale)), flush=True)


if __name__ == "__main__":
    main()
