"""Attribution on HalfCheetah-v5, from one command. A small dataset of four behaviour families is
generated locally (episodes cut at 200 steps; the last row of each is marked truncated):
    random     uniform random actions: jitter in place (return about -60 per 200 steps)
    passive    a ~ N(0, 0.1): the cheetah lies still (return about -2)
    pd-back    PD control of the six joint angles to 0 (a = -2 q - 0.2 qdot) + N(0, 0.1) noise:
               it slides backwards at about 1.7 m/s (return about -450)
    bang-flip  bang-bang joint-velocity feedback a = sign(qdot): it flips onto its back and
               rocks there (body angle about +-2.7 rad, return about -100)
It is written as D4RL-format HDF5 with the family of every episode in its metadata, and the
whole pipeline runs through the CLI (LSTM encoder, k by BIC, K + 1 IQL explanation policies
through the `process` sweep executor with 2 workers, 64 query states, report table + PNGs):
    python -m rlx.train algo=attribution algo.dataset=<file> algo.learner=iql ...
Prints the run's report (table; `clusters.png` and `query_<i>.png` next to it). Usage:
    OMP_NUM_THREADS=1 python scripts/attribution_halfcheetah.py [--episodes 10] [--seed 0]
        [--out runs/attribution_halfcheetah] [extra key=value overrides, e.g. algo.learner_steps=3000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import torch

from rlx.envs.datasets import generate, mixture, random_policy, with_noise, write_hdf5
from rlx.train import main as train_main

EPISODE_STEPS = 200


def pd_back(obs: torch.Tensor) -> torch.Tensor:
    """PD control of the joint angles (obs 2-7) to 0 with the joint velocities (obs 11-16)."""
    return (-2.0 * obs[:, 2:8] - 0.2 * obs[:, 11:17]).clamp(-1.0, 1.0)


def passive(obs: torch.Tensor) -> torch.Tensor:
    """Zero torque (the noise of `with_noise` is the whole action)."""
    return torch.zeros(obs.shape[0], 6)


def bang_flip(obs: torch.Tensor) -> torch.Tensor:
    """Bang-bang joint-velocity feedback (full torque along each joint's motion)."""
    return torch.sign(obs[:, 11:17] + 1e-6)


def make_halfcheetah_families(episodes: int, seed: int):
    env_fn = lambda: gym.make("HalfCheetah-v5", max_episode_steps=EPISODE_STEPS)  # noqa: E731
    env = env_fn()
    space = env.action_space
    env.close()
    behaviors = [("random", random_policy(space, seed)), ("passive", with_noise(passive, space, 0.1, seed + 1)),
                 ("pd-back", with_noise(pd_back, space, 0.1, seed + 2)), ("bang-flip", bang_flip)]
    parts = [generate(env_fn, policy, EPISODE_STEPS * episodes, seed=seed + 1000 * i, num_envs=episodes)
             for i, (_, policy) in enumerate(behaviors)]
    data = mixture(parts, {"env_id": "HalfCheetah-v5",
                           "behavior": "mixture of " + ", ".join(n for n, _ in behaviors)
                           + f", {EPISODE_STEPS}-step episodes"})
    data.metadata["families"] = [i for i, p in enumerate(parts) for _ in range(p.episodes.num_episodes)]
    data.metadata["family_names"] = [n for n, _ in behaviors]
    data.metadata["family_returns"] = [float(p.episodes.episode_returns().mean()) for p in parts]
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=10, help=f"episodes (of {EPISODE_STEPS} steps) per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/attribution_halfcheetah")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = make_halfcheetah_families(args.episodes, args.seed)
    print(json.dumps({"families": data.metadata["family_names"], "return_per_episode": data.metadata["family_returns"],
                      "rows": data.episodes.num_rows, "episodes": data.episodes.num_episodes}), flush=True)
    path = write_hdf5(out / f"halfcheetah-families-s{args.seed}.hdf5", data)
    run_dir = out / f"run-s{args.seed}"
    rc = train_main(["algo=attribution", f"algo.dataset={path}", "algo.learner=iql", "algo.learner_steps=1500",
                     "algo.learner_hidden=[128,128]", "algo.k_max=6", "algo.num_queries=64", "algo.n_jobs=2",
                     f"seed={args.seed}", f"trainer.run_dir={run_dir}", *overrides])
    if rc == 0:
        print((run_dir / "report.md").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        summary.update(own_family_stats(data, json.loads((run_dir / "attribution.json").read_text())))
        print(json.dumps(summary))
    return rc


def own_family_stats(data, result: dict) -> dict:
    """A proxy, not a ground truth: how often a query state (a row of the data) is attributed to a
    cluster whose majority family generated that row, and the [query family, attributed family] counts."""
    store = data.episodes
    episode = torch.repeat_interleave(torch.arange(store.num_episodes), store.lengths)
    row = torch.cdist(torch.tensor(result["queries"]).float(), store.data["obs"].float()).argmin(1)
    query_family = torch.as_tensor(data.metadata["families"])[episode[row]]
    attributed = torch.tensor(result["attributed"])
    family = torch.tensor(result["group_family"])[attributed.clamp_min(0)].masked_fill(attributed < 0, -1)
    counts = torch.zeros(4, 5, dtype=torch.long)  # last column: no attribution or a tied group
    counts.index_put_((query_family, torch.where(family < 0, 4, family)), torch.ones_like(family), accumulate=True)
    return {"own_family_rate": float((family == query_family).float().mean()),
            "query_by_attributed_family": counts.tolist()}


if __name__ == "__main__":
    raise SystemExit(main())
