"""A trained learner as a policy you call from your own code: `Policy.predict(obs)` takes what
the env gives (numpy or torch, one observation or a batch) and returns actions in the env's own
action space, with Stable-Baselines3's `predict` conventions:

* `action, state = policy.predict(obs, deterministic=True)`; `state` is always None (no
  recurrent policies), so code written for SB3 unpacks it the same way.
* One observation (the observation space's shape) gives one action (the action space's shape,
  a 0-d array for Discrete); a batch `[n, *shape]` gives `[n, ...]` actions.
* Discrete actions are int64 arrays; Box actions are float arrays of the
  space's dtype, clipped to its bounds.
* Goal-conditioned learners (gciql, hilp) take the goal as `predict(obs, goal=g)` or as a dict
  observation `{"observation": obs, "desired_goal": g}` (gymnasium-robotics' GoalEnv keys).

`rlx.load(run_dir)` (or `rlx.load(file)` of `learner.save`) returns one; `Policy(learner)` wraps
a learner in memory (the spaces it was built with, or pass `observation_space, action_space`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

__all__ = ["Policy"]

_GOAL_KEYS = ("desired_goal", "goal")


class Policy:
    """`predict(obs, deterministic=True)` over a learner's `act` (see the module docstring)."""

    def __init__(self, learner, observation_space: gym.Space | None = None, action_space: gym.Space | None = None):
        if observation_space is None or action_space is None:  # the spaces the learner was built with
            args = learner.init_arguments() if hasattr(learner, "init_arguments") else {}
            observation_space = observation_space or args.get("observation_space")
            action_space = action_space or args.get("action_space")
            if not isinstance(observation_space, gym.Space):
                raise TypeError(f"{type(learner).__name__} was not built from gymnasium spaces: "
                                "pass Policy(learner, observation_space, action_space)")
        if not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)):  # what rlx's learners act in
            raise TypeError(f"Policy needs a Box or Discrete action space, got {action_space}")
        self.learner, self.observation_space, self.action_space = learner, observation_space, action_space
        self.obs_shape = tuple(observation_space.shape or ())
        self.device = getattr(learner, "device", torch.device("cpu"))
        self._box = isinstance(action_space, gym.spaces.Box)
        if self._box:
            self._low = torch.as_tensor(action_space.low, dtype=torch.float32)
            self._high = torch.as_tensor(action_space.high, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"Policy({type(self.learner).__name__}, {self.observation_space}, {self.action_space})"

    # ------------------------------------------------------------------ torch in, torch out
    @torch.no_grad()
    def action(self, obs: torch.Tensor, deterministic: bool = True, **conditioning: torch.Tensor) -> torch.Tensor:
        """Actions [B, ...] for a batch of observations [B, *obs_shape] as tensors on the
        learner's device (Box actions clipped). Sampling never updates a learner's observation
        statistics: a learner with an action distribution (PPO) is sampled from it directly."""
        learner = self.learner
        if not deterministic and hasattr(learner, "dist") and hasattr(learner, "preprocess") and not conditioning:
            action = learner.dist(learner.preprocess(obs, update_stats=False)).sample()
        else:
            action = learner.act(obs, deterministic, **conditioning)["action"]
        if self._box:
            low, high = self._low.to(action.device), self._high.to(action.device)
            return torch.max(torch.min(action.float(), high), low)
        return action.long()

    # ------------------------------------------------------------------ what the env gives
    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                goal: Any = None) -> tuple[np.ndarray, None]:
        """`(action, None)` for one observation or a batch (numpy, torch or nested lists);
        `state` and `episode_start` are accepted for SB3 compatibility and ignored."""
        del state, episode_start
        if isinstance(obs, dict):
            key = next((k for k in _GOAL_KEYS if k in obs), None)
            if "observation" not in obs or key is None:
                raise ValueError(f"a dict observation needs 'observation' and 'desired_goal' keys, got {sorted(obs)}")
            if goal is not None:
                raise ValueError("give the goal once: as obs['desired_goal'] or as goal=, not both")
            obs, goal = obs["observation"], obs[key]
        x, single = self._batch(obs, "observation")
        conditioning = {}
        if goal is not None:
            g, goal_single = self._batch(goal, "goal")
            if goal_single != single or g.shape[0] != x.shape[0]:
                raise ValueError(f"goal batch {tuple(g.shape)} does not match observation batch {tuple(x.shape)}")
            conditioning["goal"] = g
        action = self.action(x, deterministic, **conditioning).cpu().numpy()
        action = action.astype(self.action_space.dtype if self._box else np.int64, copy=False)
        return (action[0, ...] if single else action), None  # [0, ...]: a 0-d array, as SB3, not a scalar

    def _batch(self, value: Any, what: str) -> tuple[torch.Tensor, bool]:
        """`value` as a [B, *obs_shape] tensor on the learner's device, and whether it was one observation."""
        if isinstance(value, torch.Tensor):
            array = value.detach().cpu().numpy()
        else:
            array = np.asarray(value)
        shape = tuple(array.shape)
        if shape == self.obs_shape:
            single, array = True, array[None]
        elif len(shape) == len(self.obs_shape) + 1 and shape[1:] == self.obs_shape:
            single = False
        else:
            batch = "(" + ", ".join(["n", *map(str, self.obs_shape)]) + ")"
            raise ValueError(f"{what} has shape {shape}; expected {self.obs_shape} (one) or {batch} (a batch) "
                             f"for {self.observation_space}")
        dtype = torch.float32 if np.issubdtype(array.dtype, np.floating) or isinstance(
            self.observation_space, gym.spaces.Box) else torch.int64
        return torch.as_tensor(array, dtype=dtype).to(self.device), single
