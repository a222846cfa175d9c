"""Offline datasets: D4RL-format HDF5, local Minari datasets, and a generator that rolls a
behavior policy in any gymnasium env (DESIGN.md section 6). Nothing is downloaded.

A dataset is an `EpisodeStore` (flat rows `obs, action, reward, next_obs, terminated,
truncated` + CSR offsets) plus a metadata dict (`env_id`, `ref_min_score`,
`ref_max_score`, `behavior`, ...). Names resolve as:

* a path to an `.hdf5`/`.h5` file (D4RL keys `observations, actions, rewards,
  next_observations, terminals, timeouts`; terminals and timeouts stay distinct);
* `minari:<dataset_id>`: a Minari dataset under `MINARI_DATASETS_PATH`;
* a bare name (`hopper-medium`): `<data dir>/<name>.hdf5`, data dir = `$RLX_DATA` or
  `~/.cache/rlx/datasets`.

Make datasets with `python -m rlx.envs.datasets --help` (tiny / random / policy / family).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import atomic_write
from rlx.envs.registry import EnvError

__all__ = ["OfflineDataset", "DatasetError", "data_dir", "load_dataset", "save_dataset", "read_hdf5", "write_hdf5",
           "load_minari", "save_minari", "generate", "random_policy", "checkpoint_policy", "pendulum_swingup_policy",
           "mixture", "make_tiny", "make_family", "reference_return"]

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
Policy = Callable[[torch.Tensor], torch.Tensor]  # obs [B, obs_dim] -> env-scale action [B, act_dim]


class DatasetError(EnvError):
    """A dataset is missing or malformed (an EnvError, so the CLI prints it as one line)."""


@dataclass
class OfflineDataset:
    """Episodes plus metadata; `normalized_score` maps a return to D4RL's 0 (random) .. 100 (expert)."""

    episodes: EpisodeStore
    metadata: dict[str, Any] = field(default_factory=dict)

    def normalized_score(self, ret: float) -> float | None:
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        if lo is None or hi is None or hi == lo:
            return None
        return 100.0 * (ret - lo) / (hi - lo)

    def describe(self) -> dict[str, Any]:
        returns = self.episodes.episode_returns()
        return {**self.metadata, "rows": self.episodes.num_rows, "episodes": self.episodes.num_episodes,
                "return_mean": float(returns.mean()), "return_min": float(returns.min()), "return_max": float(returns.max())}


def data_dir() -> Path:
    return Path(os.environ.get("RLX_DATA", "~/.cache/rlx/datasets")).expanduser()


# ----------------------------------------------------------------------------- HDF5 (D4RL format)


def write_hdf5(path: str | Path, data: OfflineDataset) -> Path:
    """Write D4RL keys (+ `next_observations`) and the metadata as a JSON attribute, atomically."""
    import h5py

    d = data.episodes.data

    def write(f) -> None:
        with h5py.File(f, "w") as h:
            h["observations"] = d["obs"].numpy().astype(np.float32)
            h["actions"] = d["action"].numpy().astype(np.float32)
            h["rewards"] = d["reward"].numpy().astype(np.float32)
            h["next_observations"] = d["next_obs"].numpy().astype(np.float32)
            h["terminals"] = d["terminated"].numpy().astype(bool)
            h["timeouts"] = d["truncated"].numpy().astype(bool)
            h.attrs["rlx_metadata"] = json.dumps(data.metadata)

    return atomic_write(path, write)


def read_hdf5(path: str | Path) -> OfflineDataset:
    """Read a D4RL-format file. Without `next_observations` (D4RL v0 files) the next row's
    observation is used and the last row of each time-limited episode is dropped (its next
    observation is unknown), as `d4rl.qlearning_dataset` does."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path}")
    try:
        h = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path} is not a readable HDF5 file ({e})") from None
    with h:
        missing = [k for k in D4RL_KEYS if k not in h]
        if missing:
            raise DatasetError(f"{path} is not a D4RL-format dataset: missing key {missing[0]!r} "
                               f"(found {sorted(h.keys())}; needed {list(D4RL_KEYS)})")
        arrays = {k: np.asarray(h[k]) for k in (*D4RL_KEYS, "next_observations") if k in h}
        try:
            meta = json.loads(h.attrs.get("rlx_metadata", "{}"))
        except (json.JSONDecodeError, TypeError) as e:
            raise DatasetError(f"{path}: attribute 'rlx_metadata' is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: attribute 'rlx_metadata' must be a JSON object, got {type(meta).__name__}")
        meta.update({k: v.item() if hasattr(v, "item") else v for k, v in
                     (("ref_min_score", h.attrs.get("ref_min_score")), ("ref_max_score", h.attrs.get("ref_max_score")))
                     if v is not None and k not in meta})
    n = len(arrays["rewards"])
    if any(len(a) != n for a in arrays.values()):
        raise DatasetError(f"{path}: arrays have different lengths {({k: len(a) for k, a in arrays.items()})}")
    for key, a in arrays.items():
        check_finite_rows(a, f"{path}: key {key!r}")
    for key in ("terminals", "timeouts"):
        bad = ~np.isin(arrays[key].reshape(n, -1), (0, 1)).all(axis=1)
        if bad.any():
            raise DatasetError(f"{path}: key {key!r} must hold 0/1 flags; row {int(np.argmax(bad))} holds "
                               f"{arrays[key].reshape(n, -1)[int(np.argmax(bad))].tolist()}")
    obs = torch.as_tensor(arrays["observations"], dtype=torch.float32).reshape(n, -1)
    term = torch.as_tensor(arrays["terminals"]).reshape(n).bool()
    trunc = torch.as_tensor(arrays["timeouts"]).reshape(n).bool() & ~term
    if "next_observations" in arrays:
        next_obs = torch.as_tensor(arrays["next_observations"], dtype=torch.float32).reshape(n, -1)
        keep = torch.ones(n, dtype=torch.bool)
    else:
        next_obs = torch.cat([obs[1:], obs[-1:]])
        keep = ~trunc
        keep[-1] = bool(term[-1])
        # the row before a dropped timeout row now ends its episode by truncation
        trunc = trunc.clone()
        dropped = torch.nonzero(~keep).squeeze(-1)
        trunc[dropped[dropped > 0] - 1] = True
    table = TensorDict({"obs": obs, "action": torch.as_tensor(arrays["actions"], dtype=torch.float32).reshape(n, -1),
                        "reward": torch.as_tensor(arrays["rewards"], dtype=torch.float32).reshape(n),
                        "next_obs": next_obs, "terminated": term, "truncated": trunc}, batch_size=[n])[keep]
    if table.shape[0] == 0:
        raise DatasetError(f"{path} holds no usable transitions")
    return OfflineDataset(EpisodeStore.from_flat(table), meta)


def check_finite_rows(array: np.ndarray, where: str) -> None:
    """DatasetError naming the first row of `array` holding NaN/inf (non-float arrays pass)."""
    a = np.asarray(array)
    if a.dtype.kind == "O":
        raise DatasetError(f"{where} holds Python objects, not numbers")
    if a.dtype.kind != "f" or a.size == 0:
        return
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad.any():
        raise DatasetError(f"{where} has NaN/inf at row {int(np.argmax(bad))} (the first bad row; {int(bad.sum())} "
                           "rows in all); clean or drop those rows")


def check_spaces(data: OfflineDataset, observation_space: gym.Space, action_space: gym.Space, source: str) -> None:
    """The dataset's observation/action shapes against the env's spaces, and its actions
    inside a Box action space; one DatasetError line naming the first bad row."""
    d = data.episodes.data
    for key, space in (("obs", observation_space), ("action", action_space)):
        if isinstance(space, gym.spaces.Box):
            want = int(np.prod(space.shape))
            if d[key].shape[-1] != want:
                raise DatasetError(f"dataset {source}: {key} rows have {d[key].shape[-1]} values but the env's "
                                   f"{'observation' if key == 'obs' else 'action'} space {space.shape} has {want}; "
                                   "the dataset was collected in another env (set env.id to it)")
    if isinstance(action_space, gym.spaces.Box):
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        tol = 1e-4 * (1 + torch.maximum(low.abs(), high.abs()))
        bad = ((d["action"] < low - tol) | (d["action"] > high + tol)).any(-1)
        if bad.any():
            row = int(torch.nonzero(bad)[0])
            raise DatasetError(f"dataset {source}: action at row {row} {d['action'][row].tolist()[:6]} lies outside the "
                               f"env's action space [{low.min():g}, {high.max():g}] ({int(bad.sum())} rows in all)")


# ----------------------------------------------------------------------------- Minari


def save_minari(dataset_id: str, data: OfflineDataset, env_id: str | None = None) -> Any:
    """Create a local Minari dataset (`minari.create_dataset_from_buffers`) from rlx episodes."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env_id = env_id or data.metadata.get("env_id")
    if env_id is None:
        raise DatasetError("save_minari needs the env id: pass env_id= or set metadata['env_id']")
    store, buffers = data.episodes, []
    for i in range(store.num_episodes):
        ep = store.episode(i)
        # Minari stores T+1 observations per episode: the T inputs and the final next observation
        obs = torch.cat([ep["obs"], ep["next_obs"][-1:]]).numpy()
        buffers.append(EpisodeBuffer(id=i, observations=obs, actions=ep["action"].numpy(),
                                     rewards=ep["reward"].numpy().tolist(), terminations=ep["terminated"].numpy().tolist(),
                                     truncations=ep["truncated"].numpy().tolist()))
    ref = {k: data.metadata[k] for k in ("ref_min_score", "ref_max_score") if data.metadata.get(k) is not None}
    if len(ref) < 2:
        ref = {}
    import warnings

    with warnings.catch_warnings():  # author / permalink / eval_env reminders
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, algorithm_name=data.metadata.get("behavior"),
                                                  description=json.dumps(data.metadata), **ref)


def load_minari(dataset_id: str) -> OfflineDataset:
    import minari

    if dataset_id not in minari.list_local_datasets():
        where = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"Minari dataset {dataset_id!r} not found under {where} (set MINARI_DATASETS_PATH, or create "
                           f"it with rlx.envs.datasets.save_minari; nothing is downloaded)")
    ds = minari.load_dataset(dataset_id)
    episodes = []
    for i, ep in enumerate(ds.iterate_episodes()):
        for key in ("observations", "actions", "rewards"):
            check_finite_rows(np.asarray(getattr(ep, key)), f"minari:{dataset_id} episode {i}: {key!r}")
        obs = torch.as_tensor(np.asarray(ep.observations), dtype=torch.float32)  # [T+1, obs_dim]
        t = len(ep.rewards)
        episodes.append(TensorDict({
            "obs": obs[:-1].reshape(t, -1), "next_obs": obs[1:].reshape(t, -1),
            "action": torch.as_tensor(np.asarray(ep.actions), dtype=torch.float32).reshape(t, -1),
            "reward": torch.as_tensor(np.asarray(ep.rewards), dtype=torch.float32),
            "terminated": torch.as_tensor(np.asarray(ep.terminations), dtype=torch.bool),
            "truncated": torch.as_tensor(np.asarray(ep.truncations), dtype=torch.bool)}, batch_size=[t]))
    stored = ds.storage.metadata
    try:
        meta = json.loads(stored.get("description") or "{}")
    except json.JSONDecodeError:
        meta = {"description": stored.get("description")}
    for key in ("ref_min_score", "ref_max_score"):
        if stored.get(key) is not None:
            meta[key] = float(stored[key])
    if ds.spec.env_spec is not None:
        meta.setdefault("env_id", ds.spec.env_spec.id)
    return OfflineDataset(EpisodeStore.from_episodes(episodes), meta)


# ----------------------------------------------------------------------------- by name


def dataset_path(name: str) -> Path:
    p = Path(name).expanduser()
    if p.suffix in (".hdf5", ".h5"):
        return p
    if not name or name.startswith(".") or "/" in name or "\\" in name or p.is_absolute():
        raise DatasetError(f"dataset name {name!r} must be a plain name (no '/', no leading '.') kept under the data dir; "
                           "for a file elsewhere give its path ending in .hdf5")
    return data_dir() / f"{name}.hdf5"


def load_dataset(name: str) -> OfflineDataset:
    """A path, `minari:<id>`, or a name under the data dir (see the module docstring)."""
    if name.startswith("minari:"):
        return load_minari(name.split(":", 1)[1])
    path = dataset_path(name)
    if not path.is_file():
        how = ("python -m rlx.envs.datasets tiny" if name == "pendulum-tiny" else
               "python -m rlx.envs.datasets family|policy|random ... (see --help; scripts/make_datasets.py makes the "
               "D4RL-like family)")
        raise DatasetError(f"dataset {name!r} not found at {path} (data dir: $RLX_DATA or ~/.cache/rlx/datasets); make it "
                           f"with: {how}")
    return read_hdf5(path)


def save_dataset(name: str, data: OfflineDataset) -> Path:
    return write_hdf5(dataset_path(name), data)


# ----------------------------------------------------------------------------- generation


def random_policy(action_space: gym.spaces.Box, seed: int = 0) -> Policy:
    gen = torch.Generator().manual_seed(seed)
    low, high = torch.as_tensor(action_space.low), torch.as_tensor(action_space.high)
    return lambda obs: low + (high - low) * torch.rand(obs.shape[0], *low.shape, generator=gen)


def pendulum_swingup_policy(obs: torch.Tensor) -> torch.Tensor:
    """A scripted Pendulum-v1 controller: energy pumping (dE/dt = 3 u thetadot, with
    E = thetadot^2 / 2 + 15 (cos theta - 1)) far from upright, PD control near it."""
    cos, sin, vel = obs[:, 0], obs[:, 1], obs[:, 2]
    theta = torch.atan2(sin, cos)
    energy = 0.5 * vel.pow(2) + 15.0 * (cos - 1.0)
    pump = -2.0 * torch.sign(energy * vel + 1e-6 * vel)
    pd = -(10.0 * theta + 2.0 * vel)
    return torch.where(cos > 0.85, pd, pump).clamp(-2.0, 2.0).unsqueeze(-1)


def with_noise(policy: Policy, action_space: gym.spaces.Box, std: float, seed: int = 0) -> Policy:
    """Gaussian action noise with std `std` x half the action range, clipped to the bounds."""
    gen = torch.Generator().manual_seed(seed)
    low, high = torch.as_tensor(action_space.low), torch.as_tensor(action_space.high)

    def act(obs: torch.Tensor) -> torch.Tensor:
        a = policy(obs)
        a = a + std * (high - low) / 2 * torch.randn(a.shape, generator=gen)
        return torch.max(torch.min(a, high), low)

    return act


def load_learner(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu"):
    """Rebuild the learner of an rlx run from `config.yaml` and a checkpoint: the algorithm
    module's first `__all__` class constructed as `Class(cfg, observation_space, action_space)`."""
    import importlib

    from omegaconf import OmegaConf

    from rlx.algos.registry import algorithms
    from rlx.envs.registry import EnvConfig, make_env

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise DatasetError(f"{run_dir} is not an rlx run directory (no config.yaml)")
    raw = OmegaConf.load(run_dir / "config.yaml")
    spec = algorithms()[raw.algo.name]
    algo_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.config), raw.algo))
    env_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EnvConfig), raw.env))
    env = make_env(env_cfg, check=False)
    module = importlib.import_module(spec.train.__module__)
    cls = next(getattr(module, n) for n in module.__all__ if isinstance(getattr(module, n), type)
               and hasattr(getattr(module, n), "load_state_dict"))
    learner = cls(algo_cfg, env.observation_space, env.action_space, device=device)
    from rlx.core.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint or run_dir / "checkpoints" / "last.pt")
    learner.load_state_dict(state["learner"])
    return learner, env_cfg, env


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
    learner, env_cfg, env = load_learner(run_dir, checkpoint)
    low, high = torch.as_tensor(env.action_space.low), torch.as_tensor(env.action_space.high)
    env.close()

    def mode(obs: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(learner.act(obs, deterministic=True)["action"].float(), high), low)

    if not stochastic:
        return mode, None, env_cfg
    if not (hasattr(learner, "dist") and hasattr(learner, "preprocess")):
        raise DatasetError(f"stochastic behavior needs a learner with an action distribution (e.g. PPO); "
                           f"{type(learner).__name__} has none: drop --stochastic")

    @torch.no_grad()
    def sample(obs: torch.Tensor) -> torch.Tensor:
        action = learner.dist(learner.preprocess(obs, update_stats=False)).sample().float()
        return torch.max(torch.min(action, high), low)

    return mode, sample, env_cfg


@torch.no_grad()
def generate(env_fn: Callable[[], gym.Env], policy: Policy, num_steps: int, seed: int = 0, num_envs: int = 8,
             metadata: dict[str, Any] | None = None) -> OfflineDataset:
    """Roll `policy` in `num_envs` copies of the env until `num_steps` transitions are stored.
    Episodes still running at the end are kept and marked truncated on their last row."""
    envs = gym.vector.SyncVectorEnv([env_fn] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    current: list[list[dict[str, np.ndarray]]] = [[] for _ in range(num_envs)]
    episodes: list[TensorDict] = []
    stored = 0

    def close_episode(rows: list[dict[str, np.ndarray]], cut: bool) -> None:
        ep = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
        if cut:
            ep["truncated"][-1] = True
        episodes.append(TensorDict(ep, batch_size=[len(rows)]))

    while stored < num_steps:
        action = policy(torch.as_tensor(obs, dtype=torch.float32)).cpu().numpy().astype(np.float32)
        next_obs, reward, term, trunc, info = envs.step(action)
        final = info["final_obs"] if "final_obs" in info else None
        for i in range(num_envs):
            done = bool(term[i] or trunc[i])
            nxt = final[i] if done and final is not None else next_obs[i]
            current[i].append({"obs": obs[i].astype(np.float32).ravel(), "action": action[i].ravel(),
                               "reward": np.float32(reward[i]), "next_obs": np.asarray(nxt, np.float32).ravel(),
                               "terminated": np.bool_(term[i]), "truncated": np.bool_(trunc[i] and not term[i])})
            stored += 1
            if done:
                close_episode(current[i], cut=False)
                current[i] = []
        obs = next_obs
    envs.close()
    for rows in current:
        if rows:
            close_episode(rows, cut=True)
    store = EpisodeStore.from_episodes(episodes)
    meta = dict(metadata or {})
    returns = store.episode_returns()
    meta.update(num_steps=store.num_rows, behavior_return=float(returns.mean()))
    return OfflineDataset(store, meta)


def mixture(parts: Sequence[OfflineDataset], metadata: dict[str, Any] | None = None) -> OfflineDataset:
    """Concatenate whole episodes of several datasets (e.g. medium-expert)."""
    episodes = [p.episodes.episode(i) for p in parts for i in range(p.episodes.num_episodes)]
    meta = {**parts[0].metadata, **(metadata or {})}
    store = EpisodeStore.from_episodes(episodes)
    meta.update(num_steps=store.num_rows, behavior_return=float(store.episode_returns().mean()))
    return OfflineDataset(store, meta)


@torch.no_grad()
def reference_return(env_fn: Callable[[], gym.Env], policy: Policy, episodes: int = 10, seed: int = 100_000) -> float:
    """Mean undiscounted return over full episodes (for ref_min_score / ref_max_score)."""
    from rlx.core.loops import evaluate_policy

    return evaluate_policy(policy, env_fn, episodes, seed=seed)["eval/return_mean"]


def make_tiny(num_steps: int = 10_000, seed: int = 0) -> OfflineDataset:
    """`pendulum-tiny`: the scripted swing-up controller with heavy action noise (std 0.5 x
    half-range) on Pendulum-v1: seconds to make, clearly better than random, far from optimal."""
    env_fn = lambda: gym.make("Pendulum-v1")  # noqa: E731
    space = env_fn().action_space
    behavior = with_noise(pendulum_swingup_policy, space, 0.5, seed)
    meta = {"env_id": "Pendulum-v1", "behavior": "scripted swing-up + N(0, 0.5) noise", "seed": seed,
            "ref_min_score": reference_return(env_fn, random_policy(space, seed)),
            "ref_max_score": reference_return(env_fn, pendulum_swingup_policy)}
    return generate(env_fn, behavior, num_steps, seed=seed, num_envs=8, metadata=meta)


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
    from functools import partial

    from rlx.envs.registry import make_env

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


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx.envs.datasets", description="Make and inspect offline datasets "
                                "(written to $RLX_DATA or ~/.cache/rlx/datasets as D4RL-format HDF5).")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiny", help="pendulum-tiny, the small dataset of the tests")
    t.add_argument("--steps", type=int, default=10_000)
    r = sub.add_parser("random", help="uniform random actions in a gymnasium env")
    r.add_argument("--env", required=True)
    pol = sub.add_parser("policy", help="a saved rlx run's policy (+ action noise)")
    pol.add_argument("--run", required=True, help="rlx run directory (config.yaml, checkpoints/)")
    pol.add_argument("--checkpoint", help="a checkpoint file (default <run>/checkpoints/last.pt)")
    pol.add_argument("--noise", type=float, default=0.1)
    fam = sub.add_parser("family", help="random/medium/medium-replay/expert/medium-expert from a run's snapshots")
    fam.add_argument("--env", required=True)
    fam.add_argument("--run", required=True, help="rlx run directory (for config.yaml)")
    fam.add_argument("--snapshots", required=True, help="folder of step<N>.pt checkpoints of that run")
    fam.add_argument("--noise", type=float, default=0.1)
    fam.add_argument("--medium-fraction", type=float, default=0.5)
    for q in (pol, fam):
        q.add_argument("--stochastic", action="store_true",
                       help="sample the policy's own action distribution (D4RL-style) instead of its mode")
    for q in (r, pol, fam):
        q.add_argument("--steps", type=int, default=100_000)
        q.add_argument("--name", required=q is not fam, help="dataset name (family: prefix)")
    for q in (t, r, pol, fam):
        q.add_argument("--seed", type=int, default=0)
    info = sub.add_parser("info", help="print a dataset's metadata and statistics")
    info.add_argument("name")
    args = p.parse_args(argv)
    try:
        if getattr(args, "name", None):
            dataset_path(args.name)  # a path-like name ("../x", "/abs") is refused before any work
        if args.cmd == "info":
            print(json.dumps(load_dataset(args.name).describe(), indent=2))
            return 0
        if args.cmd == "tiny":
            print(save_dataset("pendulum-tiny", make_tiny(args.steps, args.seed)))
        elif args.cmd == "random":
            env_fn = lambda: gym.make(args.env)  # noqa: E731
            space = env_fn().action_space
            meta = {"env_id": args.env, "behavior": "uniform random", "seed": args.seed}
            print(save_dataset(args.name, generate(env_fn, random_policy(space, args.seed), args.steps, args.seed, metadata=meta)))
        elif args.cmd == "policy":
            from functools import partial

            from rlx.envs.registry import make_env

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
        print(f"rlx.envs.datasets: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
