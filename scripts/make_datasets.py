"""Make the D4RL-like dataset family for a MuJoCo env from one PPO training run.

1. trains `algo=ppo_mujoco` in stages, copying a snapshot `step<N>.pt` after each stage
   (the "training run" whose snapshots give the medium, expert and replay policies);
2. calls `python -m rlx.runs family`, which writes <prefix>-{random, medium,
   medium-replay, expert, medium-expert}.hdf5 to $RLX_DATA (default ~/.cache/rlx/datasets)
   with the random and expert reference returns in the metadata.

    OMP_NUM_THREADS=1 python scripts/make_datasets.py --env Hopper-v5 --preset hopper \
        --stages 20480,61440,122880,204800 --steps 20000 --work /tmp/rlx_ppo_hopper
Pass --skip-training to reuse the snapshots already in --work, --train-only to keep only the
snapshots (e.g. for scripts/hilp_zeroshot.py), --ppo-overrides to change the PPO run, e.g. a
HalfCheetah that runs backward: --ppo-overrides 'env.kwargs={forward_reward_weight: -1.0}'.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--env", required=True, help="gymnasium id, e.g. Hopper-v5")
    p.add_argument("--preset", required=True, help="rlx/configs/env preset for PPO and the dataset prefix, e.g. hopper")
    p.add_argument("--stages", default="20480,61440,122880,204800,307200", help="PPO env-step milestones")
    p.add_argument("--steps", type=int, default=100_000, help="transitions per dataset")
    p.add_argument("--noise", type=float, default=0.1, help="action noise std of the policy datasets")
    p.add_argument("--stochastic", action="store_true",
                   help="sample each snapshot's own action distribution (D4RL-style) instead of its mode")
    p.add_argument("--work", required=True, help="folder for the PPO run and its snapshots")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--name", default=None, help="dataset prefix (default: --preset)")
    p.add_argument("--ppo-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra rlx.train overrides of the PPO training, e.g. 'env.kwargs={forward_reward_weight: -1.0}'")
    p.add_argument("--train-only", action="store_true", help="only train and keep the snapshots (no dataset family)")
    args = p.parse_args()
    work = Path(args.work)
    run, snaps = work / "run", work / "snap"
    snaps.mkdir(parents=True, exist_ok=True)
    common = ["algo=ppo_mujoco", f"env={args.preset}", "algo.anneal_lr=false", "trainer.threads=1", "trainer.eval_every=0",
              "trainer.eval_episodes=3", "trainer.progress=false", "trainer.tensorboard=false", "trainer.checkpoint_every=0", *args.ppo_overrides]
    if not args.skip_training:
        for i, stage in enumerate(int(s) for s in args.stages.split(",")):
            where = f"trainer.run_dir={run}" if i == 0 else f"trainer.resume={run}"
            subprocess.run([sys.executable, "-m", "rlx.train", *common, f"trainer.total_steps={stage}", where], check=True)
            shutil.copy(run / "checkpoints" / "last.pt", snaps / f"step{stage}.pt")
    if args.train_only:
        return 0
    return subprocess.run([sys.executable, "-m", "rlx.runs", "family", "--env", args.env, "--run", str(run),
                           "--snapshots", str(snaps), "--steps", str(args.steps), "--noise", str(args.noise),
                           "--name", args.name or args.preset,
                           *(["--stochastic"] if args.stochastic else [])]).returncode


if __name__ == "__main__":
    sys.exit(main())
