"""3-seed reproduction of CPPO's continual-RLHF comparison on the built-in preference stream.

Methods on the same stream and budget: sequential PPO (`retention=none`), PPO + KL penalty and
PPO + L2 penalty towards the previous-task policy, CPPO heuristic and CPPO learned. For each:
average final gold reward, forgetting, plasticity (gold reward on each task right after learning
it) and KL to the SFT policy, as mean and 95% t-interval over seeds, plus the issue's check:
CPPO forgets less than sequential PPO while its plasticity stays within 10% of PPO's.

    python scripts/cppo_reproduce.py                      # CLI default budget, 3 seeds
    python scripts/cppo_reproduce.py --samples-per-task 3072 --jobs 2 --out runs/cppo_repro
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

METHODS = {
    "ppo": ["algo.retention=none"],
    "ppo+kl": ["algo.retention=kl", "algo.retention_coef=0.1"],
    "ppo+l2": ["algo.retention=l2", "algo.retention_coef=0.5"],
    "cppo-heuristic": ["algo.retention=heuristic"],
    "cppo-learned": ["algo.retention=learned"],
}
KEYS = ["final/avg_reward", "final/forgetting", "final/plasticity", "final/kl_ref"]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def one_run(args: tuple[str, int, list[str], str]) -> tuple[str, int, dict]:
    method, seed, extra, out = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from rlx.train import compose_config, run

    run_dir = Path(out) / method / f"s{seed}"
    cfg = compose_config(["algo=cppo", *METHODS[method], *extra, f"seed={seed}", f"trainer.run_dir={run_dir}",
                          "trainer.progress=false", "trainer.tensorboard=false", "trainer.threads=1"])
    summary = run(cfg)
    return method, seed, {k: summary[k] for k in KEYS}


def interval(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samples-per-task", type=int, default=None, help="override algo.samples_per_task")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (one CPU thread each)")
    p.add_argument("--out", default="runs/cppo_reproduce")
    args = p.parse_args()
    extra = [] if args.samples_per_task is None else [f"algo.samples_per_task={args.samples_per_task}"]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    one_run(("ppo", 0, [*extra, "algo.samples_per_task=64", "algo.eval_samples=8"], str(Path(args.out) / "warmup")))  # builds the cache once
    jobs = [(m, s, extra, args.out) for s in range(args.seeds) for m in methods]
    results: dict[str, dict[int, dict]] = {m: {} for m in methods}
    with ProcessPoolExecutor(args.jobs) as pool:
        for method, seed, metrics in pool.map(one_run, jobs):
            results[method][seed] = metrics
            print(json.dumps({"method": method, "seed": seed, **metrics}), flush=True)
    table = {}
    for m in methods:
        table[m] = {k: interval([results[m][s][k] for s in sorted(results[m])]) for k in KEYS}
    header = f"{'method':<16}" + "".join(f"{k.split('/')[1]:>22}" for k in KEYS)
    lines = [header] + [f"{m:<16}" + "".join(f"{table[m][k][0]:>12.3f} +/- {table[m][k][1]:<6.3f}" for k in KEYS) for m in methods]
    print("\n".join(lines))
    verdict = {}
    if "ppo" in table:
        base_f, base_p = table["ppo"]["final/forgetting"][0], table["ppo"]["final/plasticity"][0]
        for m in methods:
            if m.startswith("cppo"):
                f, pl = table[m]["final/forgetting"][0], table[m]["final/plasticity"][0]
                verdict[m] = {"forgets_less_than_ppo": f < base_f,
                              "plasticity_within_10pct_of_ppo": abs(pl - base_p) <= 0.1 * abs(base_p)}
        print(json.dumps({"check": verdict}))
    from rlx.core.checkpoint import atomic_write

    text = json.dumps({"runs": results, "table": table, "check": verdict}, indent=2)
    print("wrote", atomic_write(Path(args.out) / "results.json", lambda f: f.write(text.encode())))


if __name__ == "__main__":
    main()
