"""Offline datasets: D4RL-format HDF5, local Minari datasets, and a generator that rolls a
behavior policy in any gymnasium env (docs/architecture.md section 7). Nothing is downloaded.

A dataset is an `EpisodeStore` (flat rows `obs, action, reward, next_obs, terminated,
truncated` + CSR offsets) plus a metadata dict (`env_id`, `ref_min_score`,
`ref_max_score`, `behavior`, ...). Names resolve as:

* a path to an `.hdf5`/`.h5` file (D4RL keys `observations, actions, rewards,
  next_observations, terminals, timeouts`; terminals and timeouts stay distinct);
* `minari:<dataset_id>`: a Minari dataset under `MINARI_DATASETS_PATH`;
* a bare name (`hopper-medium`): `<data dir>/<name>.hdf5`, data dir = `$RLX_DATA` or
  `~/.cache/rlx/datasets`.

Make datasets with `python -m rlx.envs.datasets --help` (tiny / random / info); datasets rolled
by a saved run's policy come from `python -m rlx.runs --help` (policy / family), which can
rebuild learners.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx.core.autoreset import final_observations
from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import atomic_write
from rlx.core.errors import DatasetError

__all__ = ["OfflineDataset", "data_dir", "load_dataset", "save_dataset", "read_hdf5", "write_hdf5",
           "load_minari", "save_minari", "generate", "random_policy", "pendulum_swingup_policy",
           "with_noise", "mixture", "make_tiny", "reference_return", "D4RL_REF_SCORES", "d4rl_reference"]

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
Policy = Callable[[torch.Tensor], torch.Tensor]  # obs [B, obs_dim] -> env-scale action [B, act_dim]

# D4RL's published reference returns (REF_MIN_SCORE: a random policy, REF_MAX_SCORE: an expert),
# from d4rl/infos.py (github.com/Farama-Foundation/D4RL): the same pair for every gym-mujoco
# dataset of an env (<env>-random/medium/expert/medium-replay/medium-expert-v0/v1/v2).
D4RL_REF_SCORES = {
    "Hopper": (-20.272305, 3234.3),
    "HalfCheetah": (-280.178953, 12135.0),
    "Walker2d": (1.629008, 4592.3),
    "Ant": (-325.6, 3879.7),
}
MINARI_ID = re.compile(r"[\w.-]+(/[\w.-]+)*/[\w.-]+-v\d+")


def d4rl_reference(env_id: str | None) -> tuple[float, float] | None:
    """D4RL's (random, expert) reference returns for `Hopper-v*`, `HalfCheetah-v*`, `Walker2d-v*`,
    `Ant-v*` (any gymnasium version), else None."""
    match = re.fullmatch(r"(\w+)-v\d+", env_id or "")
    return D4RL_REF_SCORES.get(match.group(1)) if match else None


@dataclass
class OfflineDataset:
    """Episodes plus metadata. `normalized_score` maps a return to 0 (random) .. 100 (expert): on
    D4RL's scale (`D4RL_REF_SCORES`) for the envs D4RL covers, whatever the dataset, else against
    the dataset's own references; `normalized_score_local` always uses the dataset's own
    `ref_min_score` / `ref_max_score` (its family's random and expert returns)."""

    episodes: EpisodeStore
    metadata: dict[str, Any] = field(default_factory=dict)

    def local_reference(self) -> tuple[float, float] | None:
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        return None if lo is None or hi is None or hi == lo else (float(lo), float(hi))

    def reference(self) -> tuple[float, float] | None:
        """The (min, max) returns `normalized_score` uses: D4RL's for its envs, else the local ones."""
        return d4rl_reference(self.metadata.get("env_id")) or self.local_reference()

    def normalized_score(self, ret: float) -> float | None:
        return _normalize(ret, self.reference())

    def normalized_score_local(self, ret: float) -> float | None:
        return _normalize(ret, self.local_reference())

    def describe(self) -> dict[str, Any]:
        returns = self.episodes.episode_returns()
        return {**self.metadata, "rows": self.episodes.num_rows, "episodes": self.episodes.num_episodes,
                "return_mean": float(returns.mean()), "return_min": float(returns.min()), "return_max": float(returns.max())}


def _normalize(ret: float, ref: tuple[float, float] | None) -> float | None:
    return None if ref is None else 100.0 * (ret - ref[0]) / (ref[1] - ref[0])


def data_dir() -> Path:
    return Path(os.environ.get("RLX_DATA", "~/.cache/rlx/datasets")).expanduser()


# ----------------------------------------------------------------------------- HDF5 (D4RL format)


def write_hdf5(path: str | Path, data: OfflineDataset) -> Path:
    """Write D4RL keys (+ `next_observations`), atomically, with attributes `ref_min_score` /
    `ref_max_score` (the references of `normalized_score`: D4RL's for its envs), `env_id`, and all
    metadata (the dataset's own references included) as JSON in `rlx_metadata`."""
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
            ref = data.reference()
            if ref is not None:
                h.attrs["ref_min_score"], h.attrs["ref_max_score"] = ref
            if data.metadata.get("env_id"):
                h.attrs["env_id"] = data.metadata["env_id"]

    return atomic_write(path, write)


def read_hdf5(path: str | Path) -> OfflineDataset:
    """Read a D4RL-format file. Without `next_observations` (D4RL v0 files) the next row's
    observation is used and the last row of each time-limited episode is dropped (its next
    observation is unknown), as `d4rl.qlearning_dataset` does. A row flagged both terminal and
    timeout is a terminal (gymnasium's TimeLimit flags the last allowed step even when the env
    terminated there), in Minari datasets too."""
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
                     ((k, h.attrs.get(k)) for k in ("ref_min_score", "ref_max_score", "env_id"))
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
    """The dataset's observation/action rows against the env's spaces: their sizes, values
    inside a Box's finite bounds, integers in range for a Discrete space; one DatasetError
    line naming the first bad row."""
    d = data.episodes.data
    for key, space in (("obs", observation_space), ("action", action_space)):
        what = "observation" if key == "obs" else "action"
        if key == "obs" and not isinstance(space, gym.spaces.Box):
            continue  # other observation spaces reach the networks encoded (one-hot, dicts, ...)
        rows = d[key].reshape(d.shape[0], -1)
        want = int(np.prod(space.shape)) if isinstance(space, gym.spaces.Box) else 1
        if isinstance(space, gym.spaces.Box | gym.spaces.Discrete) and rows.shape[-1] != want:
            raise DatasetError(f"dataset {source}: {key} rows have {rows.shape[-1]} values but the env's {what} "
                               f"space {space} has {want}; the dataset was collected in another env (set env.id to it)")
        if isinstance(space, gym.spaces.Box):
            low = torch.as_tensor(space.low, dtype=torch.float32).reshape(-1)
            high = torch.as_tensor(space.high, dtype=torch.float32).reshape(-1)
            tol = 1e-4 * (1 + torch.maximum(low.abs(), high.abs()).nan_to_num(posinf=0.0))
            bad = ((rows < low - tol) | (rows > high + tol)).any(-1)
            bounds = f"[{low.min():g}, {high.max():g}]"
        elif isinstance(space, gym.spaces.Discrete):
            first = int(space.start)
            bad = (rows != rows.round()).any(-1) | (rows < first).any(-1) | (rows >= first + int(space.n)).any(-1)
            bounds = f"of integers {first}..{first + int(space.n) - 1}"
        else:
            continue
        if bad.any():
            row = int(torch.nonzero(bad)[0])
            raise DatasetError(f"dataset {source}: {what} at row {row} {rows[row].tolist()[:6]} lies outside the "
                               f"env's {what} space {bounds} ({int(bad.sum())} rows in all)")


# ----------------------------------------------------------------------------- Minari


def save_minari(dataset_id: str, data: OfflineDataset, env_id: str | None = None) -> Any:
    """Create a local Minari dataset (`minari.create_dataset_from_buffers`) from rlx episodes, with
    `ref_min_score` / `ref_max_score` those of `data.normalized_score` (D4RL's for its envs) and
    the whole rlx metadata (local references included) as JSON in the description. The id must be
    `namespace/name-vN`. The dataset is built in a temporary folder beside the target and moved
    into `$MINARI_DATASETS_PATH` only when complete, so a failure leaves nothing behind."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.storage.datasets_root_dir import get_dataset_path

    if not MINARI_ID.fullmatch(dataset_id):
        raise DatasetError(f"Minari dataset id {dataset_id!r} must read namespace/name-vN (e.g. rlx/pendulum/tiny-v0)")
    env_id = env_id or data.metadata.get("env_id")
    if env_id is None:
        raise DatasetError("save_minari needs the env id: pass env_id= or set metadata['env_id']")
    root, target = get_dataset_path(), get_dataset_path(dataset_id)
    if target.exists():
        raise DatasetError(f"Minari dataset {dataset_id!r} already exists at {target}; delete it or bump the version")
    store, buffers = data.episodes, []
    for i in range(store.num_episodes):
        ep = store.episode(i)
        # Minari stores T+1 observations per episode: the T inputs and the final next observation
        obs = torch.cat([ep["obs"], ep["next_obs"][-1:]]).numpy()
        buffers.append(EpisodeBuffer(id=i, observations=obs, actions=ep["action"].numpy(),
                                     rewards=ep["reward"].numpy().tolist(), terminations=ep["terminated"].numpy().tolist(),
                                     truncations=ep["truncated"].numpy().tolist()))
    ref = data.reference()
    ref_kwargs = {} if ref is None else {"ref_min_score": ref[0], "ref_max_score": ref[1]}
    import warnings

    staging = Path(tempfile.mkdtemp(prefix=".rlx-minari-", dir=root))
    previous = os.environ.get("MINARI_DATASETS_PATH")
    try:
        os.environ["MINARI_DATASETS_PATH"] = str(staging)  # minari writes under this root
        with warnings.catch_warnings():  # author / permalink / eval_env reminders
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, algorithm_name=data.metadata.get("behavior"),
                                               description=json.dumps(data.metadata), **ref_kwargs)
        # namespace metadata files first (kept if they exist), then the finished dataset folder
        for made in sorted(staging.rglob("namespace_metadata.json")):
            dest = root / made.relative_to(staging)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(made, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / dataset_id, target)
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
        shutil.rmtree(staging, ignore_errors=True)
    return minari.load_dataset(dataset_id)


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
        term = torch.as_tensor(np.asarray(ep.terminations), dtype=torch.bool)
        episodes.append(TensorDict({
            "obs": obs[:-1].reshape(t, -1), "next_obs": obs[1:].reshape(t, -1),
            "action": torch.as_tensor(np.asarray(ep.actions), dtype=torch.float32).reshape(t, -1),
            "reward": torch.as_tensor(np.asarray(ep.rewards), dtype=torch.float32),
            "terminated": term, "truncated": torch.as_tensor(np.asarray(ep.truncations), dtype=torch.bool) & ~term},
            batch_size=[t]))
    stored = ds.storage.metadata
    try:
        meta = json.loads(stored.get("description") or "{}")
    except json.JSONDecodeError:
        meta = {"description": stored.get("description")}
    for key in ("ref_min_score", "ref_max_score"):  # the description's own (local) references come first
        if stored.get(key) is not None and key not in meta:
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
        real_next = final_observations(next_obs, info)  # the final observation where an episode ended
        for i in range(num_envs):
            done = bool(term[i] or trunc[i])
            nxt = real_next[i]
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


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlx.envs.datasets", description="Make and inspect offline datasets "
                                "(written to $RLX_DATA or ~/.cache/rlx/datasets as D4RL-format HDF5).")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiny", help="pendulum-tiny, the small dataset of the tests")
    t.add_argument("--steps", type=int, default=10_000)
    r = sub.add_parser("random", help="uniform random actions in a gymnasium env")
    r.add_argument("--env", required=True)
    r.add_argument("--steps", type=int, default=100_000)
    r.add_argument("--name", required=True, help="dataset name")
    for q in (t, r):
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
    except DatasetError as e:
        print(f"rlx.envs.datasets: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
