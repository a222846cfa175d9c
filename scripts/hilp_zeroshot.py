"""HILP zero-shot RL on HalfCheetah: reward-free exploratory data, rewards given only as N
labelled samples at test time (docs/hilp.md).

    # two PPO trainings with snapshots (scripts/make_datasets.py --train-only --work keeps <work>/snap/*.pt): one
    # runs forward, one backward (--ppo-overrides 'env.kwargs={forward_reward_weight: -1.0}'); docs/hilp.md
    python scripts/hilp_zeroshot.py --datasets-only --ppo-runs WORK_FORWARD WORK_BACKWARD
    python scripts/hilp_zeroshot.py --steps 10000 --jobs 2

Runs (each `python -m rlx.train ...`, through `rlx.sweep.run_points` into runs/hilp_zeroshot/<config hash>;
a finished run is not repeated, an interrupted one resumes; `--jobs` runs at a time):
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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlx.core.checkpoint import atomic_write  # noqa: E402

TASKS = ["forward", "backward", "jump"]
PPO_RUN = "/tmp/mujoco/ppo/HalfCheetah-v5"
# the official zero-shot code's phi settings (hilp_zsrl SFAgentConfig: hilp_discount 0.98, hilp_expectile 0.5,
# z_dim 50); the goal-reaching defaults of `algo=hilp` are 0.99 / 0.95 / 32
ZSRL = ("algo.discount=0.98", "algo.expectile=0.5", "algo.latent_dim=50")


def _snapshots(work: str) -> list[tuple[Path, Path | None]]:
    """(run dir, checkpoint) pairs of one PPO training: every `<work>/snap/*.pt` (the snapshots
    `scripts/make_datasets.py` keeps, i.e. the replay of the training run), else the run's last checkpoint."""
    root = Path(work)
    run = root / "run" if (root / "run" / "checkpoints" / "last.pt").is_file() else root
    if not (run / "checkpoints" / "last.pt").is_file():
        found = sorted(c.parents[1] for c in root.glob("*/checkpoints/last.pt"))
        if not found:
            raise SystemExit(f"hilp_zeroshot: no rlx PPO run at {work} (need <run>/checkpoints/last.pt, <work>/run/... "
                             "or a folder of runs); train one with python -m rlx.train algo=ppo_mujoco env=halfcheetah "
                             "and pass --ppo-runs")
        run = found[0]
    snaps = sorted((root / "snap").glob("*.pt"), key=lambda f: int("".join(c for c in f.stem if c.isdigit()) or 0))
    return [(run, snap) for snap in snaps] or [(run, None)]


def make_datasets(steps: int, works: list[str], noise: float, stochastic: bool) -> None:
    """1/4 uniform-random actions; 3/4 split evenly over every snapshot of every PPO training run in
    `works` (e.g. one trained to run forward and one backward), each acting with its mode plus
    N(0, noise) (or, with `stochastic`, sampling its own Gaussian: HalfCheetah PPO's is so wide that
    38% of the samples clip and their mean is a poor action, which offline learners then average)."""
    from functools import partial

    import gymnasium as gym
    import torch

    from rlx.envs.datasets import generate, load_dataset, mixture, random_policy, save_dataset, with_noise
    from rlx.envs.state_rewards import relabel
    from rlx.runs import checkpoint_policy

    env_fn = partial(gym.make, "HalfCheetah-v5")
    space = env_fn().action_space
    snaps = [pair for work in works for pair in _snapshots(work)]
    parts = [generate(env_fn, random_policy(space, 0), steps // 4, 0)]
    for i, (run, ckpt) in enumerate(snaps, 1):
        torch.manual_seed(i)
        policy, _ = checkpoint_policy(run, ckpt, stochastic=stochastic)
        if not stochastic and noise > 0:
            policy = with_noise(policy, space, noise, i)
        parts.append(generate(env_fn, policy, (steps - steps // 4) // len(snaps), i))
    names = ", ".join(f"{run.parent.name}/{ckpt.stem if ckpt else 'last'}" for run, ckpt in snaps)
    how = "sampled" if stochastic else f"mode + N(0, {noise})"
    meta = {"env_id": "HalfCheetah-v5", "behavior": f"1/4 uniform random, 3/4 split over PPO snapshots ({how}): {names}"}
    print(save_dataset("cheetah-explore", mixture(parts, meta)))
    for task in TASKS:
        data = load_dataset("cheetah-explore")
        relabel(data.episodes, task)
        print(save_dataset(f"cheetah-explore-{task}", data))


def overrides(name: str, args) -> list[str]:
    """The rlx.train overrides of one run (hilp, random_phi or iql_<task>)."""
    hidden = "[" + ",".join(str(h) for h in args.hidden) + "]"
    common = [f"trainer.total_steps={args.steps}", "trainer.eval_every=0", f"trainer.eval_episodes={args.episodes}",
              "trainer.threads=1", "trainer.tensorboard=false", "trainer.checkpoint_every=2000",
              f"algo.hidden={hidden}", f"algo.batch_size={args.batch}", f"seed={args.seed}"]
    if name in ("hilp", "random_phi"):
        return ["algo=hilp", "env=cheetah-explore", f"algo.phi={'hilbert' if name == 'hilp' else 'random'}",
                f"algo.reward_tasks=[{','.join(TASKS)}]", f"algo.reward_samples={args.samples}",
                f"algo.extraction={args.extraction}", *args.hilp_overrides, *common]
    task = name.removeprefix("iql_")
    return ["algo=iql", "env=cheetah-explore", f"env.name=cheetah-explore-{task}", f"env.dataset=cheetah-explore-{task}",
            "env.id=null", "env.entry_point=rlx.envs.state_rewards:make_task_env",
            f"env.kwargs={{env_id: HalfCheetah-v5, task: {task}}}", f"algo.extraction={args.extraction}",
            *args.ref_overrides, *common]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets-only", action="store_true")
    p.add_argument("--data-steps", type=int, default=100_000)
    p.add_argument("--ppo-runs", nargs="+", default=[PPO_RUN], metavar="WORK",
                   help="PPO trainings whose snapshots make the non-random 3/4 (a make_datasets.py --work folder, a run dir, "
                        "or a folder of runs)")
    p.add_argument("--noise", type=float, default=0.3, help="action noise std around each snapshot's mode (datasets)")
    p.add_argument("--stochastic", action="store_true", help="datasets: sample the snapshots' Gaussians instead")
    p.add_argument("--ref-overrides", nargs="*", default=["algo.awr_alpha=10", "algo.normalize_reward=false"],
                   metavar="KEY=VALUE", help="extra overrides of the IQL upper references (default: the temperature and "
                   "raw rewards of HILP's latent policy, so the reference differs from it only in the reward)")
    p.add_argument("--steps", type=int, default=10_000, help="gradient steps per run")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", nargs="+", type=int, default=[256, 256])
    p.add_argument("--samples", type=int, default=10_000, help="reward-labelled samples for z inference")
    p.add_argument("--episodes", type=int, default=5, help="evaluation episodes per task")
    p.add_argument("--hilp-overrides", nargs="*", default=list(ZSRL), metavar="KEY=VALUE",
                   help="extra overrides of the hilp and random_phi runs (default: the official zero-shot phi settings, "
                        f"{' '.join(ZSRL)})")
    p.add_argument("--extraction", choices=["awr", "ddpg_bc"], default="awr",
                   help="policy extraction of every run (HILP's latent policy and the IQL references alike)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (use one --root per seed)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--root", default=str(ROOT / "runs" / "hilp_zeroshot"))
    p.add_argument("--names", nargs="+", help="only these runs (hilp, random_phi, iql_<task>)")
    p.add_argument("--tag", default="", help="suffix of the results file (zeroshot_results<tag>.json)")
    args = p.parse_args()
    if args.datasets_only:
        make_datasets(args.data_steps, args.ppo_runs, args.noise, args.stochastic)
        return
    from rlx.sweep import run_points
    from rlx.train import compose_config, run

    names = args.names or ["hilp", "random_phi", *[f"iql_{t}" for t in TASKS]]
    results = {}
    for name, (job, out) in zip(names, run_points([overrides(n, args) for n in names], args.root, compose_config, run,
                                                            n_jobs=args.jobs)):
        if isinstance(out, BaseException):
            print(f"FAILED {name}: {type(out).__name__}: {out} (see {job.run_dir}/error.txt)", flush=True)
            continue
        results[name] = out
        print(name, {k: round(v, 2) for k, v in out.items() if k.startswith("eval/")}, flush=True)
    results = {n: results.get(n, {}) for n in ["hilp", "random_phi", *[f"iql_{t}" for t in TASKS]]}
    rows = ["| task | HILP (zero-shot) [fit R^2] | random phi (zero-shot) [fit R^2] | IQL on the task reward (upper ref.) |",
            "|---|---|---|---|"]
    get = lambda r, k: f"{r[k]:.1f}" if k in r else "n/a"  # noqa: E731
    r2 = lambda r, t: f" [{r[f'eval/{t}/fit_r2']:.2f}]" if f"eval/{t}/fit_r2" in r else ""  # noqa: E731
    for t in TASKS:
        hilp, rnd = results["hilp"], results["random_phi"]
        rows.append(f"| {t} | {get(hilp, f'eval/{t}/return_mean')}{r2(hilp, t)} | {get(rnd, f'eval/{t}/return_mean')}"
                    f"{r2(rnd, t)} | {get(results[f'iql_{t}'], 'eval/return_mean')} |")
    report = {"seed": args.seed, "steps": args.steps, "batch": args.batch, "hidden": args.hidden, "samples": args.samples,
              "hilp_overrides": args.hilp_overrides, "ref_overrides": args.ref_overrides, "extraction": args.extraction,
              "episodes": args.episodes, "results": results, "table": "\n".join(rows)}
    out = ROOT / "docs" / "hilp" / f"zeroshot_results{args.tag}.json"
    atomic_write(out, lambda f: f.write(json.dumps(report, indent=1).encode()))
    print(report["table"])


if __name__ == "__main__":
    main()
