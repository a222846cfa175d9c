"""The loops own the data flow (docs/architecture.md section 3); learners own the maths.

* `OnPolicyLoop`: vector env -> `RolloutBuffer` [T, N] -> advantages -> `learner.update`.
* `OffPolicyLoop`: vector env -> `ReplayBuffer` -> `utd` sampled updates per env step (SAC, TD3),
  after `learning_starts` random steps; the buffer and the envs' state are in the checkpoint.
* `OfflineLoop`: `ReplayBuffer` -> sample -> `learner.update`, with periodic evaluation
  through a policy that an optional test-time hook may wrap (OPEX, TTT).
* `SamplerLoop`: a sampler draws objects/sequences from the policy and scores them
  (GFlowNets, RLHF/CPPO, DDPO) -> `learner.update`.

They share one small base, `Loop`: budget and stop condition, logging, evaluation
cadence, checkpoints (every N iterations, N per loop type, at the end, and on Ctrl-C; resuming a finished run is a no-op), RNG state, progress.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
from abc import ABC, abstractmethod
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx.core import distributed
from rlx.core.autoreset import final_observations
from rlx.core.buffers import ReplayBuffer, RolloutBuffer
from rlx.core.checkpoint import learner_init, load_checkpoint, save_checkpoint
from rlx.core.errors import DivergenceError, EnvFailure
from rlx.core.logging import Progress, RunLogger
from rlx.core.nets import batch_mean_var, merge_moments
from rlx.core.trainer_config import TrainerConfig


def flushing_denormals() -> bool:
    """Whether this thread's CPU float arithmetic flushes subnormal numbers to zero now (probed:
    torch has no getter for `torch.set_flush_denormal`)."""
    return float(torch.tensor([1e-39], dtype=torch.float32)) == 0.0


@contextlib.contextmanager
def flush_denormal(enabled: bool = True):
    """Subnormal floats flushed to zero inside the block (x86 FTZ/DAZ, `torch.set_flush_denormal`,
    on the calling thread: with `trainer.threads` 1, all of rlx's compute), the previous mode
    restored after it. Why: Adam's moments of units that get no gradient (dead ReLUs) decay
    geometrically through the subnormal range (below 1.2e-38 in float32), where CPU arithmetic on
    them is slow (a fused Adam step with 18% of its moments there: 10x); 150,000 steps into Hopper a
    third of SAC's critic Adam state is subnormal and its update costs 8.8 ms instead of 6.2 ms
    (BENCHMARKS.md, "Off-policy: SAC"). Values that small carry no information for learning; the
    flush changes results only where they occur (and no longer matches a run without it bit for
    bit). No-op where the CPU does not support it, and for CUDA tensors (their kernels do not
    read this mode)."""
    if not enabled:
        yield
        return
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch global RNG states as tensors and plain types (checkpoints load
    with `weights_only=True`, so no numpy arrays)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
             "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


class Loop(ABC):
    """Budget, logging, evaluation, checkpoints, RNG and progress for every loop.

    Subclasses implement `iteration() -> (units_done, metrics)`. `evaluate` is a callable
    returning namespaced metrics (`eval/return_mean`, ...), or None for no evaluation.
    """

    unit = "steps"
    key_metric = "eval/return_mean"
    default_checkpoint_every = 50  # iterations between checkpoints when trainer.checkpoint_every is None

    def __init__(self, learner, cfg: TrainerConfig, logger: RunLogger | None = None,
                 evaluate: Callable[[], dict[str, float]] | None = None, seed: int = 0):
        self.learner, self.cfg, self.evaluate = learner, cfg, evaluate
        self.logger = logger or RunLogger(None)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # minibatch / sampling order
        self.steps = 0  # units of the budget consumed
        self.iterations = 0
        self.next_eval = cfg.eval_every if cfg.eval_every > 0 else None
        self.last_eval: dict[str, float] = {}
        self._warned: set[str] = set()  # metrics already reported under trainer.on_nonfinite=warn

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {**rng_state(), "loop": self.generator.get_state()}
        if distributed.is_distributed():  # every rank draws its own data: keep each rank's RNG
            rng = {"per_rank": distributed.all_gather_object(rng)}
        return {
            "learner": self.learner.state_dict(),
            "init": learner_init(self.learner),  # how to rebuild the learner (rlx.load)
            "loop": {"steps": self.steps, "iterations": self.iterations, "next_eval": self.next_eval,
                     "last_eval": self.last_eval, **self.extra_state()},
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        loop = state["loop"]
        self.steps, self.iterations = loop["steps"], loop["iterations"]
        self.next_eval, self.last_eval = loop["next_eval"], loop["last_eval"]
        self.load_extra_state(loop)
        rng = state["rng"]
        if "per_rank" in rng:
            per_rank = rng["per_rank"]
            if len(per_rank) != distributed.world_size():
                raise RuntimeError(f"checkpoint was written by {len(per_rank)} ranks, resuming with "
                                   f"{distributed.world_size()}; resume with the same --nproc_per_node")
            rng = per_rank[distributed.rank()]
        set_rng_state(rng)
        self.generator.set_state(rng["loop"])

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.logger.run_dir is None else self.logger.run_dir / "checkpoints"

    def save(self) -> Path | None:
        """Write `checkpoints/last.pt` atomically (no-op without a run dir; rank 0 only). A state
        with a non-finite parameter is never written over the last good checkpoint."""
        state = self.state_dict()  # collective under DDP: every rank must call save()
        checked = distributed.is_distributed() or self.checkpoint_dir is not None  # every rank checks its own state
        found = distributed.first_on_any_rank(None if not checked or finite_state(state["learner"]) else "parameter")
        if found is not None:
            rank = f" on rank {found[0]}" if distributed.is_distributed() else ""
            self._nonfinite(f"parameter{rank}", "in the learner state", saving=True)
            return None
        if self.checkpoint_dir is None or not distributed.is_main():
            return None
        return save_checkpoint(self.checkpoint_dir / "last.pt", state)

    def _check_finite(self, metrics: dict[str, Any]) -> None:
        """The divergence guard, once per update: losses and gradient norms are already host
        floats in `metrics`, so this adds no device sync. Under DDP a flag is all-reduced, so a
        non-finite value on one rank stops every rank at the same update."""
        bad = next(((key, value) for key, value in metrics.items()
                    if (key.startswith("loss/") or key.endswith("grad_norm")) and not math.isfinite(value)), None)
        found = distributed.first_on_any_rank(bad)
        if found is not None:
            rank, (key, value) = found
            self._nonfinite(f"{key} on rank {rank}" if distributed.is_distributed() else key, value)

    def _nonfinite(self, what: str, value: Any, saving: bool = False) -> None:
        where = f"at {self.unit[:-1] if self.unit.endswith('s') else self.unit} {self.steps} (iteration {self.iterations})"
        kept = self.checkpoint_dir / "last.pt" if self.checkpoint_dir is not None else None
        keep = f"; the last good checkpoint {kept} is kept" if kept is not None and kept.is_file() else ""
        if self.cfg.on_nonfinite == "warn":
            if what not in self._warned:
                self._warned.add(what)
                note = "; not saving this checkpoint" if saving else "; going on (trainer.on_nonfinite=warn)"
                print(f"rlx: warning: non-finite {what} ({value}) {where}{note}{keep}", file=sys.stderr)
            return
        raise DivergenceError(f"non-finite {what} ({value}) {where}{keep}; lower the learning rate or check the "
                              "data, or set trainer.on_nonfinite=warn to go on")

    def resume(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path))

    @property
    def checkpoint_every(self) -> int:
        every = self.cfg.checkpoint_every
        return self.default_checkpoint_every if every is None else every

    @property
    def progress_label(self) -> str:
        """The progress bar's name."""
        return type(self).__name__

    @property
    def finished(self) -> bool:
        """A resumed run whose budget was already spent (its final evaluation is done)."""
        return self.iterations > 0 and self.steps >= self.cfg.total_steps

    # ------------------------------------------------------------------ running
    @abstractmethod
    def iteration(self) -> tuple[int, dict[str, float]]:
        """Advance the budget by one unit of work; return (units done, metrics)."""

    def run(self) -> dict[str, float]:
        """Train until the budget is spent; evaluate at the end; return the final metrics.
        Resuming a finished run with the same budget is a no-op: nothing is logged, evaluated
        or rewritten, and the run's summary is returned. With `trainer.flush_denormal` (the
        default) the run computes with subnormal floats flushed to zero (`flush_denormal`)."""
        if self.finished:
            return self._finished_summary()
        with flush_denormal(self.cfg.flush_denormal):
            return self._run()

    def _run(self) -> dict[str, float]:
        distributed.sync_learner(self.learner)  # no-op in one process
        progress = Progress(self.cfg.total_steps, self.progress_label, self.cfg.progress and distributed.is_main(),
                            initial=self.steps)
        try:
            while self.steps < self.cfg.total_steps:
                t0 = time.perf_counter()
                n, metrics = self.iteration()
                self.steps += n
                self.iterations += 1
                self._check_finite(metrics)
                metrics[f"time/{self.unit}_per_s"] = n / max(time.perf_counter() - t0, 1e-9)
                if self.next_eval is not None and self.steps >= self.next_eval and self.steps < self.cfg.total_steps:
                    metrics.update(self.run_evaluation())
                    while self.next_eval <= self.steps:
                        self.next_eval += self.cfg.eval_every
                if self.iterations % max(self.cfg.log_every, 1) == 0 or "eval/return_mean" in metrics:
                    self.logger.log(self.steps, metrics)
                if self.checkpoint_every and self.iterations % self.checkpoint_every == 0:
                    self.save()
                progress.update(n, **self._postfix(metrics))
        except KeyboardInterrupt:
            self.save()
            progress.close()
            raise
        progress.close()
        final = self.run_evaluation() if self.evaluate is not None else {}
        if final:
            self.logger.log(self.steps, final)
        self.save()
        summary = {k: v for k, v in self.logger.latest.items() if not k.startswith("time/")}
        summary.update(final)
        self.logger.write_summary(summary)
        return summary

    def _finished_summary(self) -> dict[str, float]:
        if distributed.is_main():
            print(f"rlx: run already finished ({self.steps} {self.unit} >= trainer.total_steps={self.cfg.total_steps}); "
                  "nothing to do (raise trainer.total_steps to train further)", file=sys.stderr)
        path = None if self.logger.run_dir is None else self.logger.run_dir / "summary.json"
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        return {"step": self.steps, **self.last_eval}

    def run_evaluation(self) -> dict[str, float]:
        if self.evaluate is None or not distributed.is_main():
            return {}
        self.last_eval = dict(self.evaluate())
        return self.last_eval

    def _postfix(self, metrics: dict[str, float]) -> dict[str, float]:
        shown = {}
        for key in (self.key_metric, "train/episode_return"):
            value = metrics.get(key, self.last_eval.get(key))
            if value is not None:
                shown[key.split("/")[-1]] = value
        return shown


def finite_state(state: Any) -> bool:
    """Whether every floating tensor in a (nested) state dict is finite: one max-abs per
    tensor through a fused foreach kernel and one host sync."""
    tensors: list[torch.Tensor] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and x.numel():
                tensors.append(x.detach())
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(state)
    if not tensors:
        return True
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    return all(bool(torch.stack([n.float() for n in torch._foreach_norm(ts, float("inf"))]).isfinite().all()) for ts in by_device.values())


# ---------------------------------------------------------------------- evaluation


EVAL_MAX_STEPS = 10_000  # evaluation episodes end here when the env never terminates nor truncates


@torch.no_grad()
def evaluate_policy(act: Callable[[torch.Tensor], torch.Tensor], env_fn: Callable[[], gym.Env], episodes: int = 10,
                    seed: int = 0, num_envs: int | None = None, max_steps: int | None = None) -> dict[str, float]:
    """Run `episodes` full episodes (each env plays one episode, seeds seed..seed+episodes-1)
    with `act(obs_batch) -> action_batch`; returns `eval/return_mean|std`, `eval/length_mean`.
    An episode still running after `max_steps` (default `EVAL_MAX_STEPS`) steps is cut there
    (one warning line): set env.max_episode_steps for envs without a time limit."""
    max_steps = max_steps or EVAL_MAX_STEPS
    returns, lengths = [], []
    for start in range(0, episodes, num_envs or episodes):
        n = min(num_envs or episodes, episodes - start)
        envs = gym.vector.SyncVectorEnv([env_fn] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        obs, _ = envs.reset(seed=[seed + start + i for i in range(n)])
        ret, length, alive = np.zeros(n), np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
        while alive.any():
            if length.max() >= max_steps:
                print(f"rlx: warning: evaluation episodes still running after {max_steps} steps were cut there; "
                      "set env.max_episode_steps for an env that never terminates nor truncates", file=sys.stderr)
                break
            action = act(torch.as_tensor(obs, dtype=torch.float32))
            obs, r, term, trunc, _ = envs.step(action.cpu().numpy())
            ret += r * alive
            length += alive
            alive &= ~(term | trunc)
        envs.close()
        returns.extend(ret.tolist())
        lengths.extend(length.tolist())
    return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
            "eval/length_mean": float(np.mean(lengths))}


# ---------------------------------------------------------------------- on-policy


class RewardScaler:
    """Divide rewards by the running std of the discounted return (SB3 VecNormalize's
    `norm_reward`, Engstrom et al. 2020): a per-env return accumulator reset at episode ends.
    The running variance is `RunningMeanStd`'s parallel update in numpy float64 scalars (it runs
    every env step: as torch ops it was an eighth of a MuJoCo PPO rollout); the state keeps
    `RunningMeanStd`'s state-dict layout."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, eps

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        b_mean, b_var, b = (float(v) for v in batch_mean_var(self.returns))
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, b_mean, b_var, b)
        self.returns[done] = 0.0
        return np.clip(reward / math.sqrt(self.var + self.eps), -self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        rms = {k: torch.tensor(v, dtype=torch.float64) for k, v in (("mean", self.mean), ("var", self.var), ("count", self.count))}
        return {"returns": torch.from_numpy(self.returns.copy()), "rms": rms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = state["returns"].numpy().copy()
        self.mean, self.var, self.count = (float(state["rms"][k]) for k in ("mean", "var", "count"))


class OnPolicyLoop(Loop):
    """Collect `num_steps` x `num_envs` transitions, compute advantages, update.

    The learner provides `act(obs) -> TensorDict(action, logp, value[, obs])` (an `obs`
    entry, if present, is the processed input the policy saw and is what gets stored),
    `value(obs) -> [B]`, `update(batch [T, N]) -> metrics`, and `gamma`, `gae_lambda`.
    """

    unit = "env_steps"

    def __init__(self, learner, envs: gym.vector.VectorEnv, cfg: TrainerConfig, num_steps: int,
                 logger: RunLogger | None = None, evaluate=None, seed: int = 0, normalize_reward: bool = False):
        super().__init__(learner, cfg, logger, evaluate, seed)
        self.envs, self.T, self.N = envs, num_steps, envs.num_envs
        self.buffer = RolloutBuffer(num_steps, self.N, device=getattr(learner, "device", "cpu"))
        self.reward_scaler = RewardScaler(self.N, learner.gamma) if normalize_reward else None
        self.obs: np.ndarray | None = None
        self.host: dict[str, np.ndarray] | None = None  # the env side of the rollout (`_host_columns`)
        self.episode_return = np.zeros(self.N)
        self.episode_length = np.zeros(self.N, dtype=np.int64)

    def extra_state(self) -> dict[str, Any]:
        return {"reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.buffer.device)

    def _host_columns(self, obs: np.ndarray) -> None:
        """The env side of the rollout, [T, N, ...] host arrays filled in place each step: raw
        observations (for the one finiteness check per rollout), rewards, true next
        observations, terminated, truncated. On a CPU learner the buffer's columns are views of
        them (no copy at all); on an accelerator they are copied once per rollout."""
        T, N = self.T, self.N
        self.host = {"raw_obs": np.zeros((T, *obs.shape), np.float32), "reward": np.zeros((T, N), np.float32),
                     "next_obs": np.zeros((T, *obs.shape), np.float32), "terminated": np.zeros((T, N), bool),
                     "truncated": np.zeros((T, N), bool)}
        if self.buffer.device.type == "cpu":
            self.buffer.allocate({k: torch.from_numpy(self.host[k]) for k in ("reward", "next_obs", "terminated", "truncated")})

    def _check_rollout(self, rows: int) -> None:
        """The finiteness check of the first `rows` steps of the rollout, in step order: an
        observation is checked before the reward of its step (one numpy pass per rollout)."""
        bad_obs = ~np.isfinite(self.host["raw_obs"][:rows].reshape(rows, -1)).all(1)
        bad_rew = ~np.isfinite(self.host["reward"][:rows]).all(1)
        if bad_obs.any() or bad_rew.any():
            t_obs = int(np.argmax(bad_obs)) if bad_obs.any() else rows
            t_rew = int(np.argmax(bad_rew)) if bad_rew.any() else rows
            what, t = ("observation", t_obs) if t_obs <= t_rew else ("reward", t_rew)
            raise EnvFailure(f"returned a non-finite (NaN/inf) {what} at global step {self.steps + t * self.N}")

    @torch.no_grad()
    def collect(self) -> list[tuple[float, int]]:
        """Fill the buffer with T steps of all N envs; return finished (return, length) pairs.
        Each step writes into preallocated [T, N] storage (no per-step TensorDict, no per-step
        device sync); observations and rewards are checked for NaN/inf once per rollout."""
        if self.obs is None:
            try:
                self.obs, _ = self.envs.reset(seed=self.seed + 1000 * self.iterations)
            except Exception as e:
                raise EnvFailure(f"raised {type(e).__name__} in reset() at global step {self.steps}: {e}") from e
        if self.host is None:
            self._host_columns(self.obs)
        host, cols, device = self.host, self.buffer.columns, self.buffer.device
        returns, lengths = [], []
        self.buffer.reset()
        for t in range(self.T):
            host["raw_obs"][t] = self.obs
            obs = self._tensor(self.obs)  # [N, *obs_shape]
            out = self.learner.act(obs)
            action = out["action"]
            if "action" not in cols:  # the first step: the policy side's storage, on the learner's device
                seen = out.get("obs", obs)
                self.buffer.allocate({k: torch.zeros(self.T, *v.shape, dtype=v.dtype, device=device) for k, v in
                                      (("obs", seen), ("action", action), ("logp", out["logp"]), ("value", out["value"]))})
            try:
                next_obs, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            except Exception as e:
                self._check_rollout(t + 1)  # a NaN that reached the env is reported as such
                raise EnvFailure(f"raised {type(e).__name__} in step() at global step {self.steps + t * self.N}: "
                                 f"{' '.join(str(e).split())[:300]}") from e
            cols["obs"][t], cols["action"][t], cols["logp"][t], cols["value"][t] = (
                out.get("obs", obs), action, out["logp"], out["value"])
            host["terminated"][t], host["truncated"][t] = term, trunc
            final_observations(next_obs, info, out=host["next_obs"][t])  # the true next obs of ended episodes
            done = term | trunc
            self.episode_return += reward
            self.episode_length += 1
            if done.any():
                returns.append(self.episode_return[done])
                lengths.append(self.episode_length[done])
                self.episode_return[done], self.episode_length[done] = 0.0, 0
            host["reward"][t] = reward if self.reward_scaler is None else self.reward_scaler(reward, done)
            self.obs = next_obs
        self.buffer.t = self.T
        self._check_rollout(self.T)
        if device.type != "cpu":
            for k in ("reward", "next_obs", "terminated", "truncated"):
                cols[k] = torch.from_numpy(host[k]).to(device)
            self.buffer.allocate({})
        data = self.buffer.data
        # V(true next obs) for every step: bootstraps truncations and the rollout's end
        flat_next = data["next_obs"].reshape(self.T * self.N, *data["next_obs"].shape[2:])  # [T*N, *obs_shape]
        data["next_value"] = self.learner.value(flat_next).reshape(self.T, self.N)
        returns, lengths = (np.concatenate(x) if x else np.zeros(0) for x in (returns, lengths))
        return list(zip(returns.tolist(), lengths.astype(np.int64).tolist()))

    def iteration(self) -> tuple[int, dict[str, float]]:
        finished = self.collect()
        batch = self.buffer.compute_advantages(self.learner.gamma, self.learner.gae_lambda)
        metrics = self.learner.update(batch)
        if finished:
            metrics["train/episode_return"] = float(np.mean([r for r, _ in finished]))
            metrics["train/episode_length"] = float(np.mean([n for _, n in finished]))
        return self.T * self.N, metrics


# ---------------------------------------------------------------------- offline


class OfflineLoop(Loop):
    """Gradient steps on minibatches from a fixed dataset; the budget counts gradient steps.
    One iteration is one (cheap) gradient step, so checkpoints default to every 5,000.
    `transform(buffer, idx, generator) -> batch` replaces plain row sampling when given
    (e.g. goal relabelling with `buffer.sample_future`)."""

    unit = "grad_steps"
    default_checkpoint_every = 5_000

    def __init__(self, learner, buffer: ReplayBuffer, cfg: TrainerConfig, batch_size: int = 256,
                 logger: RunLogger | None = None, evaluate=None, seed: int = 0,
                 transform: Callable[[ReplayBuffer, torch.Tensor, torch.Generator], TensorDict] | None = None):
        super().__init__(learner, cfg, logger, evaluate, seed)
        self.buffer, self.batch_size, self.transform = buffer, batch_size, transform

    def iteration(self) -> tuple[int, dict[str, float]]:
        if self.transform is None:
            batch = self.buffer.sample(self.batch_size, self.generator)
        else:
            batch = self.transform(self.buffer, self.buffer.sample_indices(self.batch_size, self.generator), self.generator)
        return 1, self.learner.update(batch)


# ---------------------------------------------------------------------- sampler


class SamplerLoop(Loop):
    """`sample() -> (batch, num_samples)`: the policy generates objects (molecules, token
    sequences, images) and the sampler scores them; then `learner.update(batch)`.
    The budget counts generated samples. `sample` may also return `(batch, num_samples, metrics)`
    to log metrics of the samples themselves (e.g. a held-out score) with the update's.

    A driver that runs the loop by composition (`algos/continual.py`'s task stream) passes
    `label` (the progress bar's name), `extra` (an object whose `state_dict()` /
    `load_state_dict()` travel in the loop's checkpoint) and `postfix()` (fields shown before
    the progress bar's own)."""

    unit = "samples"
    key_metric = "train/reward_mean"

    def __init__(self, learner, sample: Callable[[], tuple[Any, int]], cfg: TrainerConfig,
                 logger: RunLogger | None = None, evaluate=None, seed: int = 0, *, label: str | None = None,
                 extra: Any = None, postfix: Callable[[], dict[str, Any]] | None = None):
        super().__init__(learner, cfg, logger, evaluate, seed)
        self.sample = sample
        self.label, self.extra, self.postfix = label, extra, postfix

    @property
    def progress_label(self) -> str:
        return self.label or super().progress_label

    def extra_state(self) -> dict[str, Any]:
        return {} if self.extra is None else self.extra.state_dict()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.extra is not None:
            self.extra.load_state_dict(state)

    def _postfix(self, metrics: dict[str, float]) -> dict[str, float]:
        return {**(self.postfix() if self.postfix is not None else {}), **super()._postfix(metrics)}

    def iteration(self) -> tuple[int, dict[str, float]]:
        batch, n, *extra = self.sample()
        metrics = self.learner.update(batch)
        if extra:
            metrics.update(extra[0])
        return n, metrics
