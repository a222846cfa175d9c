"""Issue 17's offline measurements on D4RL-style SAC families (scripts/make_d4rl_family.py), through
`rlx.sweep` + `rlx.report`, seed-major so a cut-short run still has every cell at the first seeds.

Parts (every point is one `rlx.train` run into `<out>/points`; finished runs are skipped, so
rerunning the command only reports):

* `matrix`: value x extraction (BC, IQL+AWR, IQL+DDPG+BC, TD3+BC) on medium, medium-replay and
  medium-expert;
* `survival`: IQL+AWR with original / zero / random / negative rewards on medium, medium-replay and
  expert (Li et al. 2023);
* `testtime`: OPEX and TTT on top of the trained IQL+AWR matrix runs (scripts/offline_test_time.py).

Scores are `eval/normalized_score` (D4RL's published references for the MuJoCo envs) and the report
is `rlx.report` (IQM, 95% bootstrap CI, plots) into `<out>/report`.

    export RLX_DATA=/work/d4rl/data OMP_NUM_THREADS=1
    python scripts/offline_d4rl.py --family hopper-sac:hopper --family halfcheetah-sac:halfcheetah \
        --seeds 3 --steps 20000 --out runs/offline_d4rl
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MATRIX = {"bc": "bc", "iql+awr": "iql", "iql+ddpg_bc": "iql_ddpgbc", "td3+bc": "td3bc"}
MATRIX_DATA = ("medium", "medium-replay", "medium-expert")
SURVIVAL_DATA = ("medium", "medium-replay", "expert")
REWARDS = ("original", "zero", "random", "negative")
PARTS = ("matrix", "survival", "testtime")
# D4RL -v2 normalized scores from the IQL paper's Table 1 (Kostrikov et al. 2022; its BC and TD3+BC
# columns are the published runs it collects), for the datasets whose stand-ins this script trains on.
# Reference only: those are 1M-row datasets from D4RL's own SAC runs and 1M gradient steps.
PAPER = {
    "bc": {"halfcheetah-medium": 42.6, "hopper-medium": 52.9, "halfcheetah-medium-replay": 36.6,
           "hopper-medium-replay": 18.1, "halfcheetah-medium-expert": 55.2, "hopper-medium-expert": 52.5,
           "walker2d-medium": 75.3, "walker2d-medium-replay": 26.0, "walker2d-medium-expert": 107.5},
    "td3+bc": {"halfcheetah-medium": 48.3, "hopper-medium": 59.3, "halfcheetah-medium-replay": 44.6,
               "hopper-medium-replay": 60.9, "halfcheetah-medium-expert": 90.7, "hopper-medium-expert": 98.0,
               "walker2d-medium": 83.7, "walker2d-medium-replay": 81.8, "walker2d-medium-expert": 110.1},
    "iql+awr": {"halfcheetah-medium": 47.4, "hopper-medium": 66.3, "halfcheetah-medium-replay": 44.2,
                "hopper-medium-replay": 94.7, "halfcheetah-medium-expert": 86.7, "hopper-medium-expert": 91.5,
                "walker2d-medium": 78.3, "walker2d-medium-replay": 73.9, "walker2d-medium-expert": 109.6},
}
# rlx.report's algorithm labels of the MATRIX presets
REPORT_LABEL = {"bc": "bc", "iql+awr": "iql[iql,awr]", "iql+ddpg_bc": "iql_ddpgbc", "td3+bc": "td3bc"}


def points(families: list[tuple[str, str]], seed: int, parts: list[str], common: list[str]) -> list[list[str]]:
    """The runs of one seed: each a list of `rlx.train` overrides."""
    out = []
    for prefix, env in families:
        def point(algo: str, kind: str, reward: str, prefix=prefix, env=env) -> list[str]:
            name = f"{prefix}-{kind}"
            return [f"algo={algo}", f"env={env}", f"env.dataset={name}", f"env.name={name}", f"reward={reward}",
                    f"seed={seed}", *common]
        if "matrix" in parts or "testtime" in parts:
            algos = MATRIX.values() if "matrix" in parts else ["iql"]
            out += [point(a, k, "original") for k in MATRIX_DATA for a in algos]
        if "survival" in parts:
            out += [point("iql", k, r) for k in SURVIVAL_DATA for r in REWARDS]
    return out


def tables(cells: list[dict], families: list[tuple[str, str]], parts: list[str]) -> str:
    """Markdown pivots of rlx.report's cells (IQM [95% CI], n seeds): the matrix (algorithm x dataset,
    with the paper's D4RL number of the same algorithm and dataset kind) and the survival table
    (reward x dataset, IQL+AWR)."""
    cell = {(c["algo"], c["env"], c["reward"]): c for c in cells}

    def fmt(c):
        return "-" if c is None else f"{c['iqm']:.1f} [{c['ci'][0]:.1f}, {c['ci'][1]:.1f}] (n={c['n']})"

    out = []
    if "matrix" in parts:
        cols = [(prefix, env, kind) for prefix, env in families for kind in MATRIX_DATA]
        out += ["| algo | " + " | ".join(f"{prefix}-{kind}" for prefix, _, kind in cols) + " |",
                "|---" * (len(cols) + 1) + "|"]
        for name, label in REPORT_LABEL.items():
            out.append(f"| {name} | " + " | ".join(fmt(cell.get((label, f"{p}-{k}", "original"))) for p, _, k in cols) + " |")
        for name, paper in PAPER.items():
            out.append(f"| {name}, D4RL (IQL paper) | " + " | ".join(
                str(paper.get(f"{env}-{k}", "-")) for _, env, k in cols) + " |")
        out.append("")
    if "survival" in parts:
        cols = [(prefix, kind) for prefix, _ in families for kind in SURVIVAL_DATA]
        out += ["| IQL+AWR reward | " + " | ".join(f"{p}-{k}" for p, k in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for reward in REWARDS:
            out.append(f"| {reward} | " + " | ".join(fmt(cell.get(("iql[iql,awr]", f"{p}-{k}", reward))) for p, k in cols) + " |")
    return "\n".join(out)


def _family(text: str) -> tuple[str, str]:
    prefix, sep, env = text.partition(":")
    if not sep or not prefix or not env:
        raise argparse.ArgumentTypeError(f"--family {text!r}: write it as <dataset prefix>:<env preset>, e.g. hopper-sac:hopper")
    return prefix, env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", type=_family, action="append", required=True,
                   help="<dataset prefix>:<env preset>, e.g. hopper-sac:hopper (repeat for several envs)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one torch thread each)")
    p.add_argument("--out", default="runs/offline_d4rl")
    p.add_argument("--dry-run", action="store_true", help="validate and list every point, run nothing")
    p.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. algo.hidden=[256,256]")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if bad := [x for x in parts if x not in PARTS]:
        p.error(f"unknown parts {bad}; choose from {', '.join(PARTS)}")
    from rlx import report, sweep
    from rlx.train import compose_config, run

    out = Path(args.out)
    common = [f"trainer.total_steps={args.steps}", f"trainer.eval_every={args.eval_every}",
              f"trainer.eval_episodes={args.eval_episodes}", "trainer.threads=1", "trainer.tensorboard=false",
              "trainer.progress=false", *args.overrides]
    seeds = [points(args.family, s, parts, common) for s in range(args.seeds)]
    if args.dry_run:
        for s, pts in enumerate(seeds):
            for job in sweep.plan_points(pts, out / "points", compose_config):
                print(s, job.run_dir, " ".join(job.overrides))
        return 0
    failed = 0
    for pts in seeds:
        results = sweep.run_points(pts, out / "points", compose_config, run, n_jobs=args.jobs)
        failed += sum(isinstance(r, BaseException) for _, r in results)
    code = report.main([str(out / "points"), "--metric", "eval/normalized_score", "--out", str(out / "report")])
    if code == 0:
        import json

        print("\n" + tables(json.loads((out / "report" / "report.json").read_text())["cells"], args.family, parts))
    if "testtime" in parts:
        iql = [job.run_dir for pts in seeds for job in sweep.plan_points(pts, out / "points", compose_config)
               if "algo=iql" in job.overrides and "reward=original" in job.overrides]
        script = Path(__file__).with_name("offline_test_time.py")
        code |= subprocess.call([sys.executable, str(script), *sorted(set(iql)), "--episodes", str(args.eval_episodes)])
    return 1 if failed else code


if __name__ == "__main__":
    sys.exit(main())
