"""A dataset sampled from one SAC snapshot of a scripts/make_d4rl_family.py run, exactly as that script
samples its `medium` and `expert` sets (stochastic actions, `generate`'s 8 envs), with the family's
references; e.g. issue 17's hopper-sac50k-medium (the 50k snapshot):

    RLX_DATA=/work/d4rl/data python scripts/snapshot_dataset.py --work /work/d4rl/hopper --env Hopper-v5 \
        --step 50000 --name hopper-sac50k-medium --rows 100000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_d4rl_family import learner_from, run_config, sampled  # noqa: E402

from rlx.core.checkpoint import load_checkpoint  # noqa: E402
from rlx.envs import datasets as ds  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="the --work folder of make_d4rl_family.py (run/, snap/, snapshot_returns.json)")
    p.add_argument("--env", required=True)
    p.add_argument("--step", type=int, required=True, help="the snapshot: snap/step<STEP>.pt")
    p.add_argument("--name", required=True, help="dataset name, written to $RLX_DATA/<name>.hdf5")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1, help="generate()'s and torch's seed (make_d4rl_family uses 1 for medium)")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes of the random policy's reference return")
    a = p.parse_args(argv)
    work = Path(a.work)
    snap, scores_file = work / "snap" / f"step{a.step}.pt", work / "snapshot_returns.json"
    for f in (snap, scores_file, work / "run" / "config.yaml"):
        if not f.is_file():
            p.error(f"no {f}: run scripts/make_d4rl_family.py --work {work} first")
    env_fn = lambda: gym.make(a.env)  # noqa: E731
    env = env_fn()
    learner = learner_from(load_checkpoint(snap), env, run_config(work / "run"))
    scores = {int(k): v for k, v in json.loads(scores_file.read_text()).items()}
    ref_min = ds.reference_return(env_fn, ds.random_policy(env.action_space, 0), a.eval_episodes)
    base = {"env_id": a.env, "ref_min_score": ref_min, "ref_max_score": scores[max(scores)], "snapshot_returns": scores,
            "source_run": str(work / "run"), "stochastic": True, "behavior": f"SAC snapshot step {a.step} (sampled)"}
    env.close()
    torch.manual_seed(a.seed)
    data = ds.generate(env_fn, sampled(learner), a.rows, a.seed, metadata=base)
    ds.save_dataset(a.name, data)
    info = data.describe()
    print(json.dumps({k: info[k] for k in ("rows", "episodes", "return_mean", "return_min", "return_max", "behavior")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
