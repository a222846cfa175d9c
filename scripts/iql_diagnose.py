"""rlx's `algo=iql` (OfflineActorCritic, the data path of `rlx.train`: load_dataset -> scale_rewards ->
ReplayBuffer) instrumented with the AWR-weight diagnostics of scripts/iql_reference.py (issue 17):
every `--log-every` gradient steps, one JSON line with the quantiles of A = min Q_target - V and of
the weights, the fraction clipped, the effective sample size per 256-row batch, the weight share of
rows within 10 steps of a termination and of the episodes' first 20 rows, the actor's std and its mean actions against the data's;
deterministic evaluation every `--eval-every` steps.

    python scripts/iql_diagnose.py hopper-sac-medium --steps 8000 --seed 0 algo.hidden=[128,128]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iql_reference import jsonl_emitter, weight_stats  # noqa: E402

from rlx.algos.adapt import evaluate_offline  # noqa: E402
from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic, scale_rewards  # noqa: E402
from rlx.core.buffers import ReplayBuffer  # noqa: E402
from rlx.envs.datasets import load_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", help="dataset name or .hdf5 path")
    p.add_argument("overrides", nargs="*", metavar="algo.KEY=VALUE", help="IQLConfig fields, e.g. algo.hidden=[128,128]")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=4000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--log-every", type=int, default=1000)
    p.add_argument("--diag-rows", type=int, default=20000)
    p.add_argument("--out", default=None, help="append the JSON lines here too")
    a = p.parse_intermixed_args(argv)
    fields = {}
    for item in a.overrides:
        key, _, value = item.partition("=")
        if not key.startswith("algo.") or not _:
            p.error(f"override {item!r} is not algo.KEY=VALUE")
        fields[key[5:]] = yaml.safe_load(value)
    cfg = IQLConfig(**fields)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    data = load_dataset(a.dataset)
    env_id = data.metadata["env_id"]
    store = data.episodes
    info = scale_rewards(store, cfg)
    import gymnasium as gym

    env_fn = partial(gym.make, env_id)
    env = env_fn()
    learner = OfflineActorCritic(cfg, env.observation_space, env.action_space, a.steps)
    env.close()
    learner.set_dataset_stats(store.data["obs"])
    buffer = ReplayBuffer.from_episodes(store)
    emit = jsonl_emitter(a.out)

    # rows within 10 steps of the end of an episode that ended by termination
    seg = store.segment_ids()
    last = store.ptr[1:] - 1
    to_end = last[seg] - torch.arange(store.num_rows)
    near = store.data["terminated"][last][seg].reshape(-1).bool() & (to_end < 10)
    start = (torch.arange(store.num_rows) - store.ptr[:-1][seg]) < 20  # the first 20 rows of each episode
    gen = torch.Generator().manual_seed(a.seed)
    diag_idx = torch.randperm(store.num_rows, generator=gen)[: a.diag_rows]
    returns = store.episode_returns()
    emit({"config": {**vars(a), **fields}, **info, "rows": store.num_rows, "episodes": store.num_episodes,
          "scaled_return_min": float(returns.min()), "scaled_return_max": float(returns.max())})
    t0 = time.time()
    for step in range(1, a.steps + 1):
        learner.update(buffer.sample(cfg.batch_size, gen))
        rec = None
        if step % a.log_every == 0 or step == a.steps:
            with torch.no_grad():
                rows = store.data[diag_idx]
                s, act = learner.norm_obs(rows["obs"]), learner.to_unit(rows["action"])
                q = learner.q_target(s, act).min(0).values
                adv = q - learner.v(s).squeeze(-1)
                rec = {"step": step, "q_mean": float(q.mean()), "v_mean": float(learner.v(s).mean()),
                       **weight_stats(adv, cfg.awr_alpha, cfg.awr_max_weight, cfg.batch_size, near[diag_idx], start[diag_idx],
                                      learner.actor(s), act, learner.actor.log_std.clamp(-5.0, 2.0)),
                       "wall_s": round(time.time() - t0, 1)}
        if a.eval_every and (step % a.eval_every == 0 or step == a.steps):
            ev = evaluate_offline(learner, env_fn, a.eval_episodes, a.seed + 10_000)
            rec = {**(rec or {"step": step}), "eval_return": ev["eval/return_mean"],
                   "eval_d4rl_score": data.normalized_score(ev["eval/return_mean"])}
        if rec:
            emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
