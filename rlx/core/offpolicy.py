"""`OffPolicyLoop`: vector env -> `ReplayBuffer` -> `utd` updates per env step (SAC, TD3), on the
shared `Loop` base of `rlx.core.loops` (budget, evaluation, checkpoints with the buffer and env
snapshots for exact resume, progress, divergence guard)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlx.core.autoreset import final_observations
from rlx.core.buffers import ReplayBuffer
from rlx.core.checkpoint import from_plain, to_plain
from rlx.core.logging import RunLogger
from rlx.core.loops import Loop, TrainerConfig

__all__ = ["OffPolicyLoop"]



class OffPolicyLoop(Loop):
    """Vector env -> `ReplayBuffer` -> `utd` gradient updates per env step (SAC, TD3).

    The learner provides `act(obs) -> TensorDict(action)` (a stochastic / exploring env-scale
    action) and `update(batch) -> metrics` on a batch with `obs, action, reward, next_obs,
    terminated, truncated`; `next_obs` is the true next observation (the final one where an
    episode ended: SAME_STEP autoreset), `terminated` and `truncated` stay apart so truncated
    steps bootstrap. The first `learning_starts` env steps take uniform random actions (from
    the loop's generator) and do no updates. The budget counts env steps over all envs; one
    iteration is `steps_per_iteration` of them, so logging and checkpoints (every 50
    iterations by default) run at that grain. The checkpoint holds the filled part of the
    replay buffer, the current observations, episode counters and each env's state
    (`rlx.core.env_state.env_state`), so a resumed run continues exactly where it stopped.
    """

    unit = "env_steps"

    def __init__(self, learner, envs: gym.vector.VectorEnv, cfg: TrainerConfig, buffer_size: int,
                 batch_size: int = 256, learning_starts: int = 5_000, utd: float = 1.0,
                 steps_per_iteration: int = 1_000, logger: RunLogger | None = None, evaluate=None, seed: int = 0):
        super().__init__(learner, cfg, logger, evaluate, seed)
        if utd <= 0:
            raise ValueError(f"utd={utd} must be > 0 (gradient updates per env step)")
        self.envs, self.N = envs, envs.num_envs
        self.buffer = ReplayBuffer(buffer_size, device=getattr(learner, "device", "cpu"))
        self.batch_size, self.learning_starts, self.utd = batch_size, learning_starts, utd
        self.vector_steps = max(steps_per_iteration // self.N, 1)  # vector-env steps per iteration
        space = envs.single_action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if not self.discrete:
            self.act_low = torch.as_tensor(space.low, dtype=torch.float32)
            self.act_high = torch.as_tensor(space.high, dtype=torch.float32)
        self.obs: np.ndarray | None = None
        self.env_states: list[dict[str, Any]] | None = None  # restored into the envs at the next reset
        self.update_credit = 0.0  # fractional updates carried over (utd * N need not be an integer)
        self.episode_return = np.zeros(self.N)
        self.episode_length = np.zeros(self.N, dtype=np.int64)

    # ---------------------------------------------------------------- state
    def _sub_envs(self) -> list[gym.Env] | None:
        return getattr(self.envs.unwrapped, "envs", None)  # SyncVectorEnv; async envs have no handle

    def extra_state(self) -> dict[str, Any]:
        from rlx.core.env_state import env_state

        subs = self._sub_envs() if self.obs is not None else None
        return to_plain({"buffer": self.buffer.state_dict(), "obs": None if self.obs is None else self.obs.copy(),
                         "env_states": None if subs is None else [env_state(e) for e in subs],
                         "update_credit": self.update_credit, "episode_return": self.episode_return.copy(),
                         "episode_length": self.episode_length.copy()})  # numpy as tensors: weights_only loads it

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = from_plain(state)
        self.buffer.load_state_dict(state["buffer"])
        self.update_credit = state["update_credit"]
        self.episode_return, self.episode_length = state["episode_return"].copy(), state["episode_length"].copy()
        self.env_states = state["env_states"]
        # without env snapshots (async envs) the envs start new episodes and the counters restart
        self.obs = None if self.env_states is None else state["obs"].copy()
        if self.env_states is None:
            self.episode_return[:], self.episode_length[:] = 0.0, 0

    def _start(self) -> None:
        from rlx.core.env_state import set_env_state

        obs, _ = self.envs.reset(seed=self.seed + 1000 * self.iterations)
        if self.env_states is not None:
            for env, snap in zip(self._sub_envs(), self.env_states):
                set_env_state(env, snap)
            self.env_states = None
        else:
            self.obs = obs

    # ---------------------------------------------------------------- running
    def random_actions(self) -> torch.Tensor:
        if self.discrete:
            return torch.randint(int(self.envs.single_action_space.n), (self.N,), generator=self.generator)
        u = torch.rand((self.N, *self.act_low.shape), generator=self.generator)
        return self.act_low + (self.act_high - self.act_low) * u

    def iteration(self) -> tuple[int, dict[str, float]]:
        if self.obs is None or self.env_states is not None:
            self._start()
        sums: dict[str, float] = {}
        updates, returns, lengths = 0, [], []
        todo = min(self.vector_steps, -(-(self.cfg.total_steps - self.steps) // self.N))  # stop at the budget
        for _ in range(todo):
            if not np.isfinite(self.obs).all():
                raise FloatingPointError(f"the env returned a non-finite observation after {self.steps} steps")
            obs = torch.as_tensor(self.obs, dtype=torch.float32)
            warmup = self.steps < self.learning_starts
            action = self.random_actions() if warmup else self.learner.act(obs)["action"].cpu()
            next_obs, reward, term, trunc, info = self.envs.step(action.numpy())
            self.buffer.add({"obs": obs, "action": action, "reward": torch.as_tensor(reward, dtype=torch.float32),
                             "next_obs": torch.as_tensor(final_observations(next_obs, info), dtype=torch.float32),
                             "terminated": torch.as_tensor(term), "truncated": torch.as_tensor(trunc & ~term)})
            self.obs = next_obs
            # the running count, for warm-up and updates; it also keeps a Ctrl-C checkpoint taken
            # mid-iteration consistent with the buffer and the envs
            self.steps += self.N
            self.episode_return += reward
            self.episode_length += 1
            done = term | trunc
            if done.any():
                returns += self.episode_return[done].tolist()
                lengths += self.episode_length[done].tolist()
                self.episode_return[done], self.episode_length[done] = 0.0, 0
            if warmup:
                continue
            self.update_credit += self.utd * self.N
            while self.update_credit >= 1.0:
                self.update_credit -= 1.0
                for k, v in self.learner.update(self.buffer.sample(self.batch_size, self.generator)).items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
        n = todo * self.N
        self.steps -= n  # Loop.run adds the iteration's units
        metrics = {k: v / updates for k, v in sums.items()}  # means over the iteration's updates
        metrics["train/updates"] = float(updates)
        if returns:
            metrics["train/episode_return"] = float(np.mean(returns))
            metrics["train/episode_length"] = float(np.mean(lengths))
        return n, metrics
