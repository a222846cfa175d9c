"""A D4RL-style dataset family from one SAC run, as D4RL made its locomotion data (Fu et al. 2020):

1. trains `algo=sac` in stages of `--snapshot-every` env steps (resuming the same run, exactly),
   copying `checkpoints/last.pt` to `snap/step<N>.pt` after each stage;
2. scores every snapshot (deterministic, `--eval-episodes`), then writes to $RLX_DATA
   (default ~/.cache/rlx/datasets) `<name>-{random, medium, medium-replay, expert, medium-expert}.hdf5`:
   * expert: the final policy (`--expert final`, as D4RL took its final SAC policy) or the
     snapshot of the highest deterministic return (`--expert best`: for runs whose score swings
     late, e.g. walker2d; its return is then re-scored on fresh episodes, since the max of noisy
     scores is biased upward); medium: the earlier snapshot whose return is closest to
     `--medium-fraction` (1/3) of the way from the random policy's return to the expert's;
     both sample actions from the policy (stochastic, as D4RL did);
   * medium-replay: the replay buffer of the training run up to the medium snapshot;
   * medium-expert: medium + expert; random: uniform actions.
   Metadata: `env_id`, the dataset's own references (`ref_min_score` = the random policy's
   return, `ref_max_score` = the expert's), the snapshot returns, the expert's step and rule; `eval/normalized_score`
   is on D4RL's scale for the envs D4RL covers whatever these are.

Every stage and every file is skipped when it already exists, so an interrupted command resumes
where it stopped (training resumes from its checkpoint); a larger `--total-steps` extends a run
(only the new snapshots are scored; delete the datasets to remake them from the longer run).

    OMP_NUM_THREADS=1 python scripts/make_d4rl_family.py --env Hopper-v5 --name hopper-sac \
        --total-steps 300000 --snapshot-every 25000 --rows 100000 --work /tmp/rlx_sac_hopper
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import torch
from tensordict import TensorDict

from rlx.algos.sac import SAC, SACConfig
from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import load_checkpoint
from rlx.envs import datasets as ds


def code_revision() -> str:
    """The git commit of the code running this script (`-dirty` when rlx/ or scripts/ have
    uncommitted changes), or `unknown` outside a git checkout. A family is bit-reproducible only
    by the revision that made it: any change of float rounding in shared code sends SAC elsewhere."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "rlx", "scripts"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def check_revision(work: Path, revision: str) -> str:
    """Record the revision of the first stage in `<work>/revision.txt`; on resume under another
    revision, say so in one line (the run continues: its data are then made by two revisions)."""
    file = work / "revision.txt"
    if not file.is_file():
        file.write_text(revision + "\n")
        return revision
    first = file.read_text().strip()
    if first != revision:
        print(f"make_d4rl_family: warning: {work} was started by revision {first}, this is {revision}; "
              "the family will not be regenerable by either alone", file=sys.stderr)
        return f"{first}+{revision}"
    return revision


def train(args, run: Path, snaps: Path) -> list[tuple[int, Path]]:
    from rlx.train import main as train_main

    common = ["algo=sac", f"env={args.env}", f"seed={args.seed}", "trainer.threads=1", "trainer.eval_every=0",
              "trainer.eval_episodes=3", "trainer.progress=false", "trainer.tensorboard=false", *args.sac_overrides]
    stages = list(range(args.snapshot_every, args.total_steps + 1, args.snapshot_every))
    for stage in stages:
        snap = snaps / f"step{stage}.pt"
        if snap.is_file():
            continue
        where = f"trainer.resume={run}" if (run / "checkpoints" / "last.pt").is_file() else f"trainer.run_dir={run}"
        if train_main([*common, f"trainer.total_steps={stage}", where]) != 0:
            raise SystemExit(f"make_d4rl_family: SAC training stopped before {stage} steps")
        shutil.copy(run / "checkpoints" / "last.pt", snap)
    return [(s, snaps / f"step{s}.pt") for s in stages]


def learner_from(ckpt: dict, env: gym.Env, cfg: SACConfig) -> SAC:
    learner = SAC(cfg, env.observation_space, env.action_space)
    learner.load_state_dict(ckpt["learner"])
    return learner


def run_config(run: Path) -> SACConfig:
    """The SAC settings the family's run was trained with (its own config.yaml)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SACConfig), OmegaConf.load(run / "config.yaml").algo))


def sampled(learner: SAC):
    """The policy's stochastic actions, as D4RL sampled its datasets."""
    return lambda obs: learner.act(obs, deterministic=False)["action"]


def replay_dataset(ckpt: dict, meta: dict) -> ds.OfflineDataset:
    """The filled rows of a checkpoint's replay buffer (in collection order: the buffer never
    wrapped, its capacity exceeds the run) as episodes; the unfinished tail is marked truncated."""
    buf = ckpt["loop"]["buffer"]
    if buf["size"] == buf["capacity"]:
        raise SystemExit("make_d4rl_family: the replay buffer wrapped; raise algo.buffer_size above --total-steps")
    rows = TensorDict({k: v for k, v in buf["data"].items()}, batch_size=[buf["size"]])
    rows["truncated"][-1] = rows["truncated"][-1] | ~rows["terminated"][-1]
    store = EpisodeStore.from_flat(rows)
    return ds.OfflineDataset(store, {**meta, "num_steps": store.num_rows,
                                     "behavior_return": float(store.episode_returns().mean())})


RESCORE_SEED = 50_000  # the seeds of the best snapshot's re-scoring: apart from the selection's (100,000...)


def pick_expert(scores: dict[int, float], rule: str) -> tuple[int, float]:
    """(step, return) of the expert snapshot: the last one (`final`) or the highest-scoring one
    (`best`; on a tie the later)."""
    if rule == "final":
        step = max(scores)
    elif rule == "best":
        step = max(scores, key=lambda s: (scores[s], s))
    else:
        raise ValueError(f"--expert {rule!r}: use final or best")
    return step, scores[step]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="gymnasium id, e.g. Hopper-v5")
    p.add_argument("--name", required=True, help="dataset prefix, e.g. hopper-sac")
    p.add_argument("--total-steps", type=int, default=300_000, help="SAC env steps (the expert's budget)")
    p.add_argument("--snapshot-every", type=int, default=25_000, help="env steps between snapshots")
    p.add_argument("--rows", type=int, default=100_000, help="transitions of each policy dataset")
    p.add_argument("--medium-fraction", type=float, default=1 / 3, help="medium return / expert return")
    p.add_argument("--expert", choices=("final", "best"), default="final",
                   help="expert snapshot: the final policy (D4RL) or the best-scoring one (re-scored on fresh episodes)")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", required=True, help="folder for the SAC run and its snapshots")
    p.add_argument("--sac-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra rlx.train overrides of the SAC run, e.g. algo.hidden=[64,64]")
    args = p.parse_args(argv)
    if args.snapshot_every <= 0 or args.total_steps < args.snapshot_every:
        p.error("--snapshot-every must be > 0 and at most --total-steps")
    work = Path(args.work)
    run, snaps = work / "run", work / "snap"
    snaps.mkdir(parents=True, exist_ok=True)
    revision = check_revision(work, code_revision())
    snapshots = train(args, run, snaps)
    sac_cfg = run_config(run)
    env_fn = lambda: gym.make(args.env)
    env = env_fn()
    policies = {step: learner_from(load_checkpoint(path), env, sac_cfg) for step, path in snapshots}
    scores_file = work / "snapshot_returns.json"
    scores = {int(k): v for k, v in json.loads(scores_file.read_text()).items()} if scores_file.is_file() else {}
    for s, l in policies.items():  # only the snapshots not scored yet (a run extended by --total-steps)
        if s not in scores:
            scores[s] = ds.reference_return(env_fn, lambda o, l=l: l.act(o, deterministic=True)["action"],
                                            args.eval_episodes)
            scores_file.write_text(json.dumps(dict(sorted(scores.items()))))
    rand = ds.random_policy(env.action_space, args.seed)
    expert_step, ref_max = pick_expert(scores, args.expert)
    if args.expert == "best":  # an unbiased estimate of the chosen snapshot: fresh episodes (other seeds)
        l = policies[expert_step]
        ref_max = ds.reference_return(env_fn, lambda o: l.act(o, deterministic=True)["action"], args.eval_episodes,
                                      seed=RESCORE_SEED)
    ref_min = ds.reference_return(env_fn, rand, args.eval_episodes)
    target = ref_min + args.medium_fraction * (ref_max - ref_min)
    medium_step = min((s for s in policies if s < expert_step), key=lambda s: abs(scores[s] - target), default=expert_step)
    base = {"env_id": args.env, "ref_min_score": ref_min, "ref_max_score": ref_max, "snapshot_returns": scores,
            "source_run": str(run), "seed": args.seed, "stochastic": True,
            "code_revision": revision, "expert_step": expert_step, "expert_rule": args.expert}

    made = {}
    for kind in ("random", "medium", "expert", "medium-replay", "medium-expert"):
        path = ds.dataset_path(f"{args.name}-{kind}")
        if path.is_file():
            made[kind] = ds.read_hdf5(path)
            continue
        torch.manual_seed(args.seed + len(made))
        if kind == "random":
            data = ds.generate(env_fn, rand, args.rows, args.seed, metadata={**base, "behavior": "uniform random"})
        elif kind in ("medium", "expert"):
            step = medium_step if kind == "medium" else expert_step
            data = ds.generate(env_fn, sampled(policies[step]), args.rows, args.seed + len(made),
                               metadata={**base, "behavior": f"SAC snapshot step {step} (sampled)"})
        elif kind == "medium-replay":
            data = replay_dataset(load_checkpoint(snaps / f"step{medium_step}.pt"),
                                  {**base, "behavior": f"SAC replay buffer up to step {medium_step}"})
        else:
            data = ds.mixture([made["medium"], made["expert"]], {**base, "behavior": "medium + expert"})
        ds.save_dataset(f"{args.name}-{kind}", data)
        made[kind] = data
    env.close()
    for kind, data in made.items():
        info = data.describe()
        print(json.dumps({"dataset": f"{args.name}-{kind}", "rows": info["rows"], "episodes": info["episodes"],
                          "return_mean": round(info["return_mean"], 1), "behavior": info.get("behavior")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
