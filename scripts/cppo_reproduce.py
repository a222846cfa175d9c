"""The forgetting-vs-plasticity front of CPPO and its baselines on the built-in preference stream.

Methods on the same stream and budget (the CLI default, `algo=cppo`): sequential PPO
(`retention=none`, no retention coefficient), PPO + KL penalty to pi_{t-1}, PPO + L2 penalty to
theta_{t-1}, CPPO heuristic and CPPO learned, each over its retention-coefficient grid and
`--seeds` seeds. Every point is a run of `rlx.sweep` (one process at a time, one torch thread;
finished runs are skipped, so rerunning the command only reports); `rlx.report` then prints the
table (mean and 95% t-interval over seeds) and draws forgetting against plasticity per
(method, coefficient).

    python scripts/cppo_reproduce.py                                  # 5 seeds, runs/cppo_front
    python scripts/cppo_reproduce.py --seeds 2 --methods ppo,cppo-heuristic --out /tmp/front
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

METHODS = {  # method -> (retention, coefficient grid)
    "ppo": ("none", []),
    "ppo+kl": ("kl", [0.1, 0.3, 1.0, 3.0]),
    "ppo+l2": ("l2", [0.02, 0.1, 0.5, 2.5]),
    "cppo-heuristic": ("heuristic", [0.01, 0.03, 0.1, 0.3]),
    "cppo-learned": ("learned", [0.01, 0.03, 0.1, 0.3]),
}
COMMON = ["algo=cppo", "algo.compare_ppo=false", "trainer.threads=1", "trainer.tensorboard=false"]


def sweep_overrides(method: str, seed: int, out: Path, extra: list[str]) -> list[str]:
    """`rlx.sweep` overrides of one method's coefficient grid at one seed."""
    retention, coefs = METHODS[method]
    grid = [f"algo.retention_coef={','.join(map(str, coefs))}"] if coefs else []
    return [*COMMON, f"algo.retention={retention}", *grid, f"seed={seed}", *extra,
            f"hydra.sweep.dir={out / method / f's{seed}'}", "launcher=process", "launcher.n_jobs=1"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    p.add_argument("--out", default="runs/cppo_front")
    p.add_argument("overrides", nargs="*", help="extra run overrides for every point, e.g. algo.samples_per_task=1024")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"cppo_reproduce: error: unknown methods {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    from rlx import report, sweep
    from rlx.train import compose_config, run

    out = Path(args.out)
    failed = 0
    for seed in range(args.seeds):  # seed-major: a cut-short front still has every method at the first seeds
        for method in methods:
            failed += len(sweep.run_sweep(sweep_overrides(method, seed, out, args.overrides), compose_config, run)["failed"])
    code = report.main([str(out), "--metric", "final/avg_reward", "--xy", "final/plasticity", "final/forgetting"])
    return 1 if failed else code


if __name__ == "__main__":
    sys.exit(main())
