"""PPO on MuJoCo locomotion (CleanRL's `ppo_continuous_action` settings, `algo=ppo_mujoco`),
next to what CleanRL reports for the same algorithm.

    python scripts/ppo_mujoco.py --envs hopper halfcheetah --steps 1000000 --seeds 0 1 2
    python scripts/ppo_mujoco.py --summarize /tmp/mujoco        # tables from finished runs

Each run is `python -m rlx.train algo=ppo_mujoco env=<env> trainer.total_steps=<steps>`, one
torch thread, through `rlx.sweep.run_points` into <root>/<config hash> (a finished run is not
repeated, an interrupted one resumes; `--jobs` runs at a time); evaluation every 50k steps (10
deterministic episodes). The summary prints the eval curve per env (runs still training
included) and, for finished runs, `rlx.report`'s table and `learning_curves.png` in <root>. The reference numbers
are CleanRL's reported final episodic returns at 1M steps on the v4 envs (gymnasium
MuJoCo v4 and v5 differ slightly in contact and observation details), from the CleanRL
docs, `ppo_continuous_action` benchmark (tag pr-424).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

CLEANRL_1M = {"Hopper-v5": (2382.86, 271.74), "HalfCheetah-v5": (1442.64, 46.03), "Walker2d-v5": (2287.95, 571.78)}


def curves(root: Path) -> dict[str, dict[int, list[float]]]:
    """{env name: {step: [eval return per seed]}} from every PPO run under `root` (finished or not)."""
    out: dict[str, dict[int, list[float]]] = {}
    for metrics in sorted(root.rglob("metrics.jsonl")):
        config = metrics.parent / "config.yaml"
        cfg = yaml.safe_load(config.read_text()) if config.is_file() else None
        if not cfg or cfg["algo"]["name"] != "ppo":
            continue
        env = cfg["env"]["name"]
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if row.get("eval/return_mean") is not None:
                out.setdefault(env, {}).setdefault(row["step"], []).append(row["eval/return_mean"])
    return out


def summarize(root: Path) -> None:
    for env, by_step in sorted(curves(root).items()):
        ref = CLEANRL_1M.get(env)
        print(f"\n{env}  (CleanRL PPO at 1M steps: {ref[0]:.0f} +- {ref[1]:.0f})" if ref else f"\n{env}")
        for step in sorted(by_step):
            vals = by_step[step]
            mean = sum(vals) / len(vals)
            print(json.dumps({"env": env, "step": step, "eval_return_mean": round(mean, 1), "seeds": len(vals)}))
    from rlx import report

    if report.find_runs(root):
        print()
        report.main([str(root), "--metric", "eval/return_mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah"])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--root", type=Path, default=Path("runs/ppo_mujoco"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (rlx.sweep process launcher)")
    parser.add_argument("--summarize", type=Path, help="only print the tables of runs under this root")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    from rlx.sweep import run_points
    from rlx.train import compose_config, run

    points = [["algo=ppo_mujoco", f"env={env}", f"seed={seed}", f"trainer.total_steps={args.steps}",
               "trainer.eval_every=50000", "trainer.threads=1"] for env in args.envs for seed in args.seeds]
    failed = [job for job, out in run_points(points, args.root, compose_config, run, n_jobs=args.jobs) if isinstance(out, BaseException)]
    summarize(args.root)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: " + ", ".join(f"{j.run_dir}/error.txt" for j in failed))


if __name__ == "__main__":
    main()
