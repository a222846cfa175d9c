"""HILP zero-shot RL (paper: zero-shot policy prompting, zero-shot RL experiments): train phi and pi(a | s, z) on reward-free
locomotion data, then for each state-defined reward infer z from N labelled dataset samples
(least squares on the transition features, phi(s') - mean phi by default, `HILP.infer_z`) and play pi(. | s, z) with no further training.

Entry: `python -m rlx.train algo=hilp env=cheetah-explore` (or `algo.phi=random` for the
random-feature baseline). Evaluation reports `eval/<task>/return_mean` for every
`algo.reward_tasks` and their mean as `eval/return_mean`.
"""

from __future__ import annotations

from functools import partial

import torch

from rlx.algos.gcrl import goal_transform
from rlx.algos.hilp import HILP, infer_latent, reward_fit_r2

__all__ = ["zero_shot_returns", "train_zero_shot"]


def zero_shot_returns(learner: HILP, store, env_id: str, tasks: list[str], samples: int, episodes: int,
                      seed: int) -> dict[str, float]:
    """For each task: z from `samples` labelled rows of `store`, then `episodes` deterministic
    episodes of pi(. | s, z) in `env_id` with the task reward."""
    from rlx.core.loops import evaluate_policy
    from rlx.envs.state_rewards import make_task_env, task_reward

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for task in tasks:
        rows = torch.randint(store.num_rows, (samples,), generator=gen)
        obs, next_obs = store.data["obs"][rows], store.data["next_obs"][rows]
        reward = task_reward(task, next_obs)
        held = torch.randint(store.num_rows, (samples,), generator=gen)  # fresh rows: the fit's held-out R^2
        held_next = store.data["next_obs"][held]
        with torch.no_grad():  # the features once, for the prompt (= learner.infer_z) and its fit's R^2
            features = learner.features(obs, next_obs)
            z = infer_latent(features, reward.to(features.device))
            out[f"eval/{task}/fit_r2"] = reward_fit_r2(features, reward, learner.features(store.data["obs"][held], held_next),
                                                       task_reward(task, held_next))
        res = evaluate_policy(lambda o, z=z: learner.act(o, True, z=z)["action"], partial(make_task_env, env_id, task),
                              episodes, seed)
        out[f"eval/{task}/return_mean"] = res["eval/return_mean"]
    out["eval/return_mean"] = sum(out[f"eval/{t}/return_mean"] for t in tasks) / len(tasks)
    return out


def train_zero_shot(ctx) -> dict:
    from rlx.core.buffers import ReplayBuffer
    from rlx.core.errors import ConfigError
    from rlx.core.loops import OfflineLoop
    from rlx.envs.datasets import load_dataset
    from rlx.envs.registry import make_env
    from rlx.envs.state_rewards import TASKS

    cfg = ctx.cfg
    bad = [t for t in cfg.algo.reward_tasks if t not in TASKS]
    if bad or not cfg.algo.reward_tasks:
        raise ConfigError(f"algo.reward_tasks={list(cfg.algo.reward_tasks)}: unknown or empty; choose from {', '.join(TASKS)}")
    data = load_dataset(cfg.env.dataset)
    env_id = data.metadata.get("env_id") or cfg.env.id
    env = make_env(cfg.env, check=False)
    try:
        learner = HILP(cfg.algo, env.observation_space, env.action_space, cfg.trainer.total_steps, ctx.device,
                       auto_feature="state")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    env.close()
    store = data.episodes
    learner.set_dataset_stats(store.data["obs"])
    buffer = ReplayBuffer.from_episodes(store, ctx.device)

    def evaluate() -> dict[str, float]:
        return zero_shot_returns(learner, store, env_id, list(cfg.algo.reward_tasks), cfg.algo.reward_samples,
                                 cfg.trainer.eval_episodes, cfg.seed + 10_000)

    loop = OfflineLoop(learner, buffer, cfg.trainer, cfg.algo.batch_size, ctx.logger, evaluate, cfg.seed,
                       transform=goal_transform(cfg.algo))
    return ctx.run(loop)
