"""Reward functions defined from states, for zero-shot RL on locomotion data (as in HILP's zero-shot RL experiments).

Each task maps the next observation [N, obs_dim] to a reward [N]. HalfCheetah-v5 observations
are qpos[1:] (rootz, rooty, 6 joint angles) then qvel (vx, vz, vangle, 6 joint velocities), so
vx = obs[8], rootz = obs[0].

* `forward`: vx (run forward), `backward`: -vx (run backward), `jump`: rootz (keep the torso
  high), `flip`: -vangle (rotate backwards).

`TaskReward` replaces an env's reward by a task's; `relabel` rewrites a dataset's rewards.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

__all__ = ["TASKS", "task_reward", "TaskReward", "make_task_env", "relabel"]

TASKS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "forward": lambda s: s[:, 8],
    "backward": lambda s: -s[:, 8],
    "jump": lambda s: s[:, 0],
    "flip": lambda s: -s[:, 10],
}


def task_reward(task: str, next_obs: torch.Tensor) -> torch.Tensor:
    if task not in TASKS:
        raise ValueError(f"unknown reward task {task!r}; choose from {', '.join(TASKS)}")
    return TASKS[task](next_obs.float())


class TaskReward(gym.Wrapper):
    """The wrapped env with reward = task(next observation)."""

    def __init__(self, env: gym.Env, task: str):
        super().__init__(env)
        task_reward(task, torch.zeros(1, int(np.prod(env.observation_space.shape))))  # fail early on a bad name
        self.task = task

    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        r = float(task_reward(self.task, torch.as_tensor(obs, dtype=torch.float32)[None])[0])
        return obs, r, term, trunc, info


def make_task_env(env_id: str = "HalfCheetah-v5", task: str = "forward", **kwargs) -> gym.Env:
    """`env.entry_point=rlx.envs.state_rewards:make_task_env env.kwargs={env_id: ..., task: ...}`."""
    return TaskReward(gym.make(env_id, **kwargs), task)


def relabel(store, task: str):
    """The store with rewards replaced by task(next_obs), in place; returns it."""
    store.data["reward"] = task_reward(task, store.data["next_obs"])
    return store
