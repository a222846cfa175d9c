"""Wall time of one sweep of 8 short runs: sequential (in-process) vs a local process pool
vs Ray, same grid, same process, printed as JSON lines with ratios. On a machine with C free
cores the pool and Ray should approach min(C, n_jobs)x.

    python scripts/bench_sweep.py [--n-jobs 2] [--steps 4096]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from rlx.sweep import run_sweep
from rlx.train import compose_config, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4096)
    args = parser.parse_args()
    grid = ["algo=ppo", "env=CartPole-v1", "env.num_envs=4", f"trainer.total_steps={args.steps}", "trainer.eval_every=0",
            "trainer.eval_episodes=2", "trainer.tensorboard=false", "seed=0,1,2,3,4,5,6,7"]
    times = {}
    for launcher in ("inprocess", "process", "ray"):
        out = Path(tempfile.mkdtemp(prefix=f"rlx-bench-sweep-{launcher}-"))
        start = time.perf_counter()
        status = run_sweep([*grid, f"hydra.sweep.dir={out}", f"launcher={launcher}", f"launcher.n_jobs={args.n_jobs}"],
                           compose_config, run, log=lambda _: None)
        times[launcher] = time.perf_counter() - start
        assert len(status["done"]) == 8, status
        shutil.rmtree(out)
        print(json.dumps({"launcher": launcher, "runs": 8, "n_jobs": args.n_jobs, "seconds": round(times[launcher], 2)}))
    print(json.dumps({"case": "ratio", "process_speedup": times["inprocess"] / times["process"],
                      "ray_speedup": times["inprocess"] / times["ray"]}))


if __name__ == "__main__":
    main()
