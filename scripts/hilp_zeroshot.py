"""HILP zero-shot RL on HalfCheetah: reward-free exploratory data, rewards given only as N
labelled samples at test time (docs/hilp.md).

    python scripts/hilp_zeroshot.py --datasets-only     # cheetah-explore (+ one relabelled copy per task)
    python scripts/hilp_zeroshot.py --steps 10000 --jobs 2

Runs (each `python -m rlx.train ...` into runs/hilp_zeroshot/<name>):
* `hilp`: HILP phi + latent policy, z inferred per task (`algo=hilp env=cheetah-explore`);
* `random_phi`: the same policy learning on a fixed random phi network (`algo.phi=random`),
  the representation baseline;
* `iql_<task>`: the upper reference, `algo=iql` trained on the dataset relabelled with that
  task's reward and evaluated with it (env.entry_point=rlx.envs.state_rewards:make_task_env).
Results: docs/hilp/zeroshot_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlx.core.checkpoint import atomic_write  # noqa: E402

TASKS = ["forward", "backward", "jump"]
PPO_RUN = "/tmp/mujoco/ppo/HalfCheetah-v5"


def make_datasets(steps: int, ppo_run: str) -> None:
    """Half uniform-random actions, half the PPO policy with N(0, 0.5) and N(0, 1.0) action noise."""
    from functools import partial

    import gymnasium as gym

    from rlx.envs.datasets import checkpoint_policy, generate, load_dataset, mixture, random_policy, save_dataset, with_noise
    from rlx.envs.state_rewards import relabel

    env_fn = partial(gym.make, "HalfCheetah-v5")
    space = env_fn().action_space
    root = Path(ppo_run)
    found = [root] if (root / "checkpoints" / "last.pt").is_file() else [c.parents[1] for c in root.glob("*/checkpoints/last.pt")]
    if not found:
        raise SystemExit(f"hilp_zeroshot: no rlx PPO run at {ppo_run} (need <run>/checkpoints/last.pt or a folder of runs); "
                         "train one with python -m rlx.train algo=ppo_mujoco env=halfcheetah and pass --ppo-run")
    run = found[0]
    policy, _ = checkpoint_policy(run)
    parts = [generate(env_fn, random_policy(space, 0), steps // 2, 0),
             generate(env_fn, with_noise(policy, space, 0.5, 1), steps // 4, 1),
             generate(env_fn, with_noise(policy, space, 1.0, 2), steps // 4, 2)]
    meta = {"env_id": "HalfCheetah-v5", "behavior": f"1/2 uniform random, 1/4 PPO {run} + N(0,0.5), 1/4 + N(0,1.0)"}
    print(save_dataset("cheetah-explore", mixture(parts, meta)))
    for task in TASKS:
        data = load_dataset("cheetah-explore")
        relabel(data.episodes, task)
        print(save_dataset(f"cheetah-explore-{task}", data))


def run_one(name: str, args) -> dict:
    run_dir = Path(args.root) / name
    summary = run_dir / "summary.json"
    hidden = "[" + ",".join(str(h) for h in args.hidden) + "]"
    common = [f"trainer.total_steps={args.steps}", "trainer.eval_every=0", f"trainer.eval_episodes={args.episodes}",
              "trainer.threads=1", "trainer.progress=false", "trainer.tensorboard=false", "trainer.checkpoint_every=2000",
              f"trainer.run_dir={run_dir}", f"algo.hidden={hidden}", f"algo.batch_size={args.batch}", "seed=0"]
    if name in ("hilp", "random_phi"):
        cmd = ["algo=hilp", "env=cheetah-explore", f"algo.phi={'hilbert' if name == 'hilp' else 'random'}",
               f"algo.reward_tasks=[{','.join(TASKS)}]", f"algo.reward_samples={args.samples}"]
    else:
        task = name.removeprefix("iql_")
        cmd = ["algo=iql", "env=cheetah-explore", f"env.name=cheetah-explore-{task}", f"env.dataset=cheetah-explore-{task}",
               "env.id=null", "env.entry_point=rlx.envs.state_rewards:make_task_env",
               f"env.kwargs={{env_id: HalfCheetah-v5, task: {task}}}"]
    if not summary.is_file():
        if (run_dir / "checkpoints" / "last.pt").is_file():
            common.append(f"trainer.resume={run_dir}")
        proc = subprocess.run([sys.executable, "-m", "rlx.train", *cmd, *common], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            print(f"FAILED {name}: {proc.stderr[-2000:]}", flush=True)
            return {}
    out = json.loads(summary.read_text())
    print(name, {k: round(v, 1) for k, v in out.items() if k.startswith("eval/") and "return_mean" in k}, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets-only", action="store_true")
    p.add_argument("--data-steps", type=int, default=100_000)
    p.add_argument("--ppo-run", default=PPO_RUN)
    p.add_argument("--steps", type=int, default=10_000, help="gradient steps per run")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", nargs="+", type=int, default=[256, 256])
    p.add_argument("--samples", type=int, default=10_000, help="reward-labelled samples for z inference")
    p.add_argument("--episodes", type=int, default=5, help="evaluation episodes per task")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--root", default=str(ROOT / "runs" / "hilp_zeroshot"))
    p.add_argument("--names", nargs="+", help="only these runs (hilp, random_phi, iql_<task>)")
    p.add_argument("--tag", default="", help="suffix of the results file (zeroshot_results<tag>.json)")
    args = p.parse_args()
    if args.datasets_only:
        make_datasets(args.data_steps, args.ppo_run)
        return
    names = args.names or ["hilp", "random_phi", *[f"iql_{t}" for t in TASKS]]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(names, pool.map(lambda n: run_one(n, args), names)))
    results = {n: results.get(n, {}) for n in ["hilp", "random_phi", *[f"iql_{t}" for t in TASKS]]}
    rows = ["| task | HILP (zero-shot) | random phi (zero-shot) | IQL on the task reward (upper ref.) |", "|---|---|---|---|"]
    for t in TASKS:
        get = lambda r, k: f"{r[k]:.1f}" if k in r else "n/a"  # noqa: E731
        rows.append(f"| {t} | {get(results['hilp'], f'eval/{t}/return_mean')} | "
                    f"{get(results['random_phi'], f'eval/{t}/return_mean')} | {get(results[f'iql_{t}'], 'eval/return_mean')} |")
    report = {"steps": args.steps, "batch": args.batch, "hidden": args.hidden, "samples": args.samples,
              "episodes": args.episodes, "results": results, "table": "\n".join(rows)}
    out = ROOT / "docs" / "hilp" / f"zeroshot_results{args.tag}.json"
    atomic_write(out, lambda f: f.write(json.dumps(report, indent=1).encode()))
    print(report["table"])


if __name__ == "__main__":
    main()
