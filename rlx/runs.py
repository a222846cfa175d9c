"""Saved runs: rebuild a run's learner from its directory (`rlx.load(run_dir)` is `load` here),
its policy as a plain function, and offline datasets rolled by that policy.

This module sits above `rlx.algos` (it needs the algorithm registry to rebuild a learner),
so `rlx.envs` and `rlx.core` never import it. CLI:

    python -m rlx.runs policy --run RUN [--checkpoint CKPT] --name NAME [--noise 0.1] [--stochastic]
    python -m rlx.runs family --env Hopper-v5 --run RUN --snapshots DIR [--name PREFIX] [--stochastic]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from omegaconf import OmegaConf

from rlx.algos.registry import algorithms, registered_name
from rlx.core.checkpoint import decode_init, load_checkpoint
from rlx.core.errors import DatasetError
from rlx.envs.datasets import (
    OfflineDataset,
    Policy,
    generate,
    mixture,
    random_policy,
    reference_return,
    save_dataset,
    with_noise,
)
from rlx.envs.registry import EnvConfig, make_env

__all__ = ["load", "load_learner", "checkpoint_policy", "make_family", "main"]


def _rebuild(run_dir: str | Path, checkpoint: str | Path | None, device: str):
    """(learner, env config, gym env or None) of a saved run. A checkpoint that records how its
    learner was built (`init`, written by every loop) rebuilds exactly that learner, whatever
    the algorithm; older checkpoints rebuild from config.yaml as the algorithm module's first
    `__all__` class constructed as `Class(cfg, observation_space, action_space)`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DatasetError(f"{run_dir} is not an rlx run directory (no config.yaml)")
    raw = OmegaConf.load(run_dir / "config.yaml")
    env_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EnvConfig), raw.env))
    path = Path(checkpoint or run_dir / "checkpoints" / "last.pt")
    state = load_checkpoint(path)
    if state.get("init") is not None:
        learner = decode_init(state["init"], device=device, source=path)
        learner.load_state_dict(state["learner"])
        return learner, env_cfg, None
    spec = algorithms()[registered_name(raw.algorithm)]
    algo_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.config), raw.algo))
    env = make_env(env_cfg, check=False)
    module = importlib.import_module(spec.train.__module__)
    cls = next(getattr(module, n) for n in module.__all__ if isinstance(getattr(module, n), type)
               and hasattr(getattr(module, n), "load_state_dict"))
    learner = cls(algo_cfg, env.observation_space, env.action_space, device=device)
    learner.load_state_dict(state["learner"])
    return learner, env_cfg, env


def load_learner(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu"):
    """(learner, env config, env) of a saved run (`_rebuild`), the env built from the run's config."""
    learner, env_cfg, env = _rebuild(run_dir, checkpoint, device)
    return learner, env_cfg, env if env is not None else make_env(env_cfg, check=False)


def load(path: str | Path, checkpoint: str | Path | None = None, device: str = "cpu"):
    """A saved run directory, or a file of `learner.save`, ready to use (`rlx.load`): a
    `rlx.policy.Policy` for learners of gymnasium spaces (`predict(obs)`), the learner itself
    for generative learners (GFlowNet, DDPO, RLHF/CPPO: `sample_objects` / `sample`).
    `checkpoint` picks another checkpoint of a run."""
    from rlx.core.checkpoint import Saveable
    from rlx.policy import Policy

    env = None
    if Path(path).is_file():
        learner = Saveable.load(path, device=device)
    else:
        learner, _, env = _rebuild(path, checkpoint, device)
    if env is not None:
        spaces = env.observation_space, env.action_space
        env.close()
        return Policy(learner, *spaces)
    args = learner.init_arguments() if isinstance(learner, Saveable) else {}
    if isinstance(args.get("observation_space"), gym.Space) and isinstance(args.get("action_space"), gym.Space):
        return Policy(learner)
    return learner


def checkpoint_policy(run_dir: str | Path, checkpoint: str | Path | None = None,
                      stochastic: bool = False) -> tuple[Policy, Any]:
    """A saved rlx run's policy (clipped to the action bounds) and its env config: the
    deterministic action (the distribution's mode) or, with `stochastic=True`, a sample of the
    policy's own action distribution, as D4RL's datasets sampled their SAC policies. Sampling
    draws from torch's global generator (seed it for reproducible data) and never updates the
    learner's observation statistics."""
    mode, sample, env_cfg = _run_policies(run_dir, checkpoint, stochastic)
    return (sample if stochastic else mode), env_cfg


def _run_policies(run_dir, checkpoint, stochastic: bool) -> tuple[Policy, Policy | None, Any]:
    """(mode policy, sampling policy or None, env config) of one loaded checkpoint."""
    from rlx.policy import Policy as TrainedPolicy

    learner, env_cfg, env = load_learner(run_dir, checkpoint)
    policy = TrainedPolicy(learner, env.observation_space, env.action_space)
    env.close()

    def mode(obs: torch.Tensor) -> torch.Tensor:
        return policy.action(obs, deterministic=True)

    if not stochastic:
        return mode, None, env_cfg
    if not (hasattr(learner, "dist") and hasattr(learner, "preprocess")):
        raise DatasetError(f"stochastic behavior needs a learner with an action distribution (e.g. PPO); "
                           f"{type(learner).__name__} has none: drop --stochastic")

    def sample(obs: torch.Tensor) -> torch.Tensor:
        return policy.action(obs, deterministic=False)

    return mode, sample, env_cfg


def make_family(env_id: str, snapshots: Sequence[tuple[int, Path]], run_dir: Path, prefix: str, num_steps: int,
                medium_fraction: float = 0.5, noise: float = 0.1, seed: int = 0,
                stochastic: bool = False) -> dict[str, Path]:
    """The D4RL-like family from the snapshots (step, checkpoint) of one training run:
    random (uniform actions), expert (best snapshot), medium (the snapshot whose return is
    closest to `medium_fraction` of the way from random to expert), medium-replay (every
    snapshot up to medium, steps split evenly: the replay of the training run so far),
    medium-expert (medium + expert). Policy datasets add N(0, noise) action noise to the
    deterministic action, or with `stochastic=True` sample the snapshot's own distribution (then
    plus the noise, if any). Reference returns are always of the deterministic snapshots."""
    policies, behaviors = {}, {}
    env_cfg = None
    for step, ckpt in sorted(snapshots):
        policies[step], sampler, env_cfg = _run_policies(run_dir, ckpt, stochastic)
        behaviors[step] = sampler or policies[step]
    torch.manual_seed(seed)
    env_fn = partial(make_env, env_cfg, check=False)
    space = env_fn().action_space
    rand = random_policy(space, seed)
    scores = {step: reference_return(env_fn, p, episodes=5) for step, p in policies.items()}
    ref_min, best = reference_return(env_fn, rand), max(scores, key=scores.get)
    ref_max = scores[best]
    target = ref_min + medium_fraction * (ref_max - ref_min)
    medium = min(scores, key=lambda s: abs(scores[s] - target))
    base = {"env_id": env_id, "ref_min_score": ref_min, "ref_max_score": ref_max, "snapshot_returns": scores,
            "source_run": str(run_dir), "noise": noise, "seed": seed,
            "stochastic": stochastic}
    out: dict[str, OfflineDataset] = {
        "random": generate(env_fn, rand, num_steps, seed, metadata={**base, "behavior": "uniform random"}),
        "medium": generate(env_fn, with_noise(behaviors[medium], space, noise, seed + 1), num_steps, seed + 1,
                           metadata={**base, "behavior": f"snapshot step {medium}"}),
        "expert": generate(env_fn, with_noise(behaviors[best], space, noise, seed + 2), num_steps, seed + 2,
                           metadata={**base, "behavior": f"snapshot step {best}"}),
    }
    early = [s for s in sorted(policies) if s <= medium]
    out["medium-replay"] = mixture([generate(env_fn, with_noise(behaviors[s], space, noise, seed + 3 + i),
                                             num_steps // len(early), seed + 3 + i)
                                    for i, s in enumerate(early)], {**base, "behavior": f"snapshots {early}"})
    out["medium-expert"] = mixture([out["medium"], out["expert"]], {**base, "behavior": f"snapshots {medium} + {best}"})
    return {kind: save_dataset(f"{prefix}-{kind}", ds) for kind, ds in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx.runs", description="Offline datasets rolled by a saved rlx run's "
                                "policy (written to $RLX_DATA or ~/.cache/rlx/datasets as D4RL-format HDF5).")
    sub = p.add_subparsers(dest="cmd", required=True)
    pol = sub.add_parser("policy", help="a saved rlx run's policy (+ action noise)")
    pol.add_argument("--run", required=True, help="rlx run directory (config.yaml, checkpoints/)")
    pol.add_argument("--checkpoint", help="a checkpoint file (default <run>/checkpoints/last.pt)")
    fam = sub.add_parser("family", help="random/medium/medium-replay/expert/medium-expert from a run's snapshots")
    fam.add_argument("--env", required=True)
    fam.add_argument("--run", required=True, help="rlx run directory (for config.yaml)")
    fam.add_argument("--snapshots", required=True, help="folder of step<N>.pt checkpoints of that run")
    fam.add_argument("--medium-fraction", type=float, default=0.5)
    for q in (pol, fam):
        q.add_argument("--noise", type=float, default=0.1)
        q.add_argument("--stochastic", action="store_true",
                       help="sample the policy's own action distribution (D4RL-style) instead of its mode")
        q.add_argument("--steps", type=int, default=100_000)
        q.add_argument("--name", required=q is not fam, help="dataset name (family: prefix)")
        q.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.cmd == "policy":
            policy, env_cfg = checkpoint_policy(args.run, args.checkpoint, args.stochastic)
            torch.manual_seed(args.seed)
            env_fn = partial(make_env, env_cfg, check=False)
            space = env_fn().action_space
            kind = "samples" if args.stochastic else "mode"
            meta = {"env_id": env_cfg.id, "behavior": f"{args.run} ({kind}) + N(0, {args.noise})", "seed": args.seed}
            ds = generate(env_fn, with_noise(policy, space, args.noise, args.seed), args.steps, args.seed, metadata=meta)
            print(save_dataset(args.name, ds))
        else:
            snaps = sorted((int(f.stem.removeprefix("step")), f) for f in Path(args.snapshots).glob("step*.pt"))
            if not snaps:
                raise DatasetError(f"no step<N>.pt checkpoints in {args.snapshots}")
            paths = make_family(args.env, snaps, Path(args.run), args.name or args.env.split("-")[0].lower(),
                                args.steps, args.medium_fraction, args.noise, args.seed, args.stochastic)
            for kind, path in paths.items():
                print(f"{kind}: {path}")
    except DatasetError as e:
        print(f"rlx.runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
