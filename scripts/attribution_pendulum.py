"""Attribution on a continuous-control dataset, from one command: a Pendulum-v1 mixture of three
behaviour families (scripted swing-up with N(0, 0.1) action noise, the same with N(0, 0.6)
noise, uniform random actions) is generated locally, written as D4RL-format HDF5 with the
family of each episode in its metadata, and the whole pipeline runs through the CLI:
    python -m rlx.train algo=attribution algo.dataset=<file> algo.learner=iql ...
Prints the run's report (table; figures next to it in the run dir). Usage:
    OMP_NUM_THREADS=1 python scripts/attribution_pendulum.py [--episodes 8] [--out runs/attribution_pendulum]
        [extra key=value overrides, e.g. algo.encoder=transformer algo.k_max=3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import torch

from rlx.envs.datasets import generate, mixture, pendulum_swingup_policy, random_policy, with_noise, write_hdf5
from rlx.train import main as train_main


def make_pendulum_families(episodes: int, seed: int):
    env_fn = lambda: gym.make("Pendulum-v1")  # noqa: E731
    space = env_fn().action_space
    behaviors = [("swingup-0.1", with_noise(pendulum_swingup_policy, space, 0.1, seed)),
                 ("swingup-0.6", with_noise(pendulum_swingup_policy, space, 0.6, seed + 1)),
                 ("random", random_policy(space, seed + 2))]
    parts = [generate(env_fn, policy, 200 * episodes, seed=seed + 10 * i, num_envs=episodes)
             for i, (_, policy) in enumerate(behaviors)]
    data = mixture(parts, {"env_id": "Pendulum-v1", "behavior": "mixture of " + ", ".join(n for n, _ in behaviors)})
    data.metadata["families"] = [i for i, p in enumerate(parts) for _ in range(p.episodes.num_episodes)]
    data.metadata["family_names"] = [n for n, _ in behaviors]
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=8, help="episodes (of 200 steps) per behaviour family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/attribution_pendulum")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    path = write_hdf5(out / "pendulum-families.hdf5", make_pendulum_families(args.episodes, args.seed))
    run_dir = out / f"run-s{args.seed}"
    rc = train_main(["algo=attribution", f"algo.dataset={path}", "algo.learner=iql", "algo.learner_steps=1500",
                     "algo.k_max=6", "algo.num_queries=64", f"seed={args.seed}", f"trainer.run_dir={run_dir}",
                     *overrides])
    if rc == 0:
        print((run_dir / "report.md").read_text())
        print(json.dumps(json.loads((run_dir / "summary.json").read_text())))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
