"""Goal-conditioned offline RL on rlx's shared pieces: hindsight goal sampling over the
`EpisodeStore` offsets, and the GCBC / GCIQL baselines of HILP's goal-reaching comparison.

Goals (`sample_goals`, HIQL/HILP's `GCDataset` convention): for a row i of episode e, the
goal is row i itself (p_curgoal), a row i + k of the same episode with k ~ Geometric(1 -
goal_discount) truncated at the episode's last row (p_trajgoal; `ReplayBuffer.sample_future`,
which reads the boundaries from `EpisodeStore.ptr`), or a uniformly random row of the dataset
(p_randomgoal). The goal is that row's `obs`; the reward is 0 when the goal row is row i
itself and -1 otherwise, and that success also ends the episode (`terminated`).

* GCBC: max E[log pi(a | s, g)] with future goals (behavior cloning on relabelled goals).
* GCIQL: `OfflineActorCritic` (IQL value + AWR) on the input (s, g) with the reward above.
Both are `OfflineActorCritic` on concatenated (s, g) inputs, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx.algos.offline_ac import ActorCriticConfig, OfflineActorCritic
from rlx.algos.registry import register
from rlx.core.buffers import ReplayBuffer
from rlx.core.checkpoint import Saveable
from rlx.core.ranges import bounded, count, each, unit

__all__ = ["GoalConditioned", "GCIQLConfig", "sample_goals", "goal_batch", "check_goal_mix"]


def check_goal_mix(p_curgoal: float, p_trajgoal: float, p_randomgoal: float) -> None:
    probs = (p_curgoal, p_trajgoal, p_randomgoal)
    if min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"goal mix algo.p_curgoal/p_trajgoal/p_randomgoal = {probs} must be >= 0 and sum to 1; "
                         "e.g. algo.p_curgoal=0.2 algo.p_trajgoal=0.5 algo.p_randomgoal=0.3")


def sample_goals(buffer: ReplayBuffer, idx: torch.Tensor, p_curgoal: float, p_trajgoal: float, discount: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Goal row per row index: itself w.p. p_curgoal, a geometric future row of the same
    episode w.p. p_trajgoal, else a uniformly random row (see the module docstring)."""
    u = torch.rand(idx.shape, generator=generator).to(idx.device)
    future = buffer.sample_future(idx, discount, generator)
    random = torch.randint(buffer.size, idx.shape, generator=generator).to(idx.device)
    return torch.where(u < p_curgoal, idx, torch.where(u < p_curgoal + p_trajgoal, future, random))


def goal_batch(buffer: ReplayBuffer, idx: torch.Tensor, goal_idx: torch.Tensor) -> TensorDict:
    """Rows `idx` with `goal` = obs of `goal_idx`, reward 0 / -1 and terminated on success."""
    batch = buffer.data[idx]
    success = goal_idx == idx
    batch["goal"] = buffer.data["obs"][goal_idx]
    batch["reward"] = success.float() - 1.0
    batch["terminated"] = success
    return batch


def goal_transform(cfg):
    """An `OfflineLoop` transform drawing goals with the config's mix."""

    def transform(buffer: ReplayBuffer, idx: torch.Tensor, generator: torch.Generator) -> TensorDict:
        return goal_batch(buffer, idx, sample_goals(buffer, idx, cfg.p_curgoal, cfg.p_trajgoal, cfg.goal_discount, generator))

    return transform


@dataclass
class GCIQLConfig(ActorCriticConfig):
    """Goal-conditioned IQL: IQL value + AWR on (s, g) with the sparse goal reward (`algo=gciql`;
    `algo=gcbc` is its behavior-cloning preset, rlx/configs/algo/gcbc.yaml)."""

    expectile: float = bounded(0.9, 0, 1, "()")  # OGBench's GCIQL expectile
    hidden: list[int] = each(lambda: [512, 512, 512], 1)  # OGBench/HILP's goal-conditioned nets
    layer_norm: bool = True  # LayerNorm in the critics, as HIQL/HILP's value nets
    actor_cosine_decay: bool = False  # constant learning rate (HIQL/HILP)
    batch_size: int = count(1024)  # HIQL/HILP's goal-conditioned batch size
    p_curgoal: float = unit(0.2)  # goal = the current state (HIQL/HILP value sampling)
    p_trajgoal: float = unit(0.5)  # goal = a future state of the same trajectory (HIQL/HILP)
    p_randomgoal: float = unit(0.3)  # goal = a random dataset state (HIQL/HILP)
    goal_discount: float = bounded(0.99, 0, 1, "[)")  # geometric future offset, P(k) ~ goal_discount^(k-1) (HIQL/HILP geom_sample)


class GoalConditioned(Saveable):
    """`OfflineActorCritic` on (s, g): `update(batch)` needs `goal` (and the goal reward);
    `act(obs, goal=goal)`."""

    def __init__(self, cfg: GCIQLConfig, observation_space: gym.Space, action_space: gym.Space,
                 total_steps: int | None = None, device: str | torch.device = "cpu"):
        check_goal_mix(cfg.p_curgoal, cfg.p_trajgoal, cfg.p_randomgoal)
        obs_dim = int(np.prod(observation_space.shape))
        self.cfg, self.device = cfg, torch.device(device)
        joint = gym.spaces.Box(-np.inf, np.inf, (2 * obs_dim,), np.float32)
        self.inner = OfflineActorCritic(cfg, joint, action_space, total_steps, device)

    def set_dataset_stats(self, obs: torch.Tensor) -> None:
        self.inner.set_dataset_stats(torch.cat([obs, obs[torch.randperm(len(obs))]], 1))

    def update(self, batch: TensorDict) -> dict[str, float]:
        joint = TensorDict({"obs": torch.cat([batch["obs"], batch["goal"]], -1),
                            "next_obs": torch.cat([batch["next_obs"], batch["goal"]], -1),
                            "action": batch["action"], "reward": batch["reward"], "terminated": batch["terminated"]},
                           batch_size=batch.batch_size)
        return self.inner.update(joint)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, goal: torch.Tensor | None = None) -> TensorDict:
        """Actions of the policy pi(a | s, g) for observations [B, obs_dim] and goals [B, obs_dim]."""
        if goal is None:
            raise ValueError(f"{type(self).__name__}.act needs goal= (a goal observation per row)")
        return self.inner.act(torch.cat([obs.float(), goal.float()], -1), deterministic)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def train_goal_conditioned(ctx, make_learner=None) -> dict:
    """`python -m rlx.train algo=gcbc|gciql|hilp env=pointmaze-medium|pointmaze-large`: maze dataset
    -> ReplayBuffer (episode boundaries) -> OfflineLoop with goal relabelling -> success rate on
    the maze's fixed tasks."""
    from rlx.core.errors import ConfigError
    from rlx.core.loops import OfflineLoop
    from rlx.envs.datasets import load_dataset
    from rlx.envs.pointmaze import evaluate_goals

    cfg = ctx.cfg  # compose_config ran the algorithm's check: a dataset is named
    data = load_dataset(cfg.env.dataset)
    maze = data.metadata.get("maze")
    if maze is None:
        raise ConfigError(f"dataset {cfg.env.dataset!r} has no 'maze' in its metadata: goal reaching needs a maze dataset "
                          "(pointmaze-medium|pointmaze-large)")
    from rlx.envs.pointmaze import PointMaze

    env = PointMaze(maze)
    try:
        learner = (make_learner or GoalConditioned)(cfg.algo, env.observation_space, env.action_space,
                                                    cfg.trainer.total_steps, ctx.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    store = data.episodes
    learner.set_dataset_stats(store.data["obs"])
    buffer = ReplayBuffer.from_episodes(store, ctx.device)
    per_task = max(1, cfg.trainer.eval_episodes // 5)

    def evaluate() -> dict[str, float]:
        return evaluate_goals(lambda o, g: learner.act(o, True, goal=g)["action"], maze, per_task, cfg.seed + 10_000)

    if ctx.resume_from is None:
        ctx.logger.log(0, {"data/rows": float(store.num_rows), "data/episodes": float(store.num_episodes)})
    loop = OfflineLoop(learner, buffer, cfg.trainer, cfg.algo.batch_size, ctx.logger, evaluate, cfg.seed,
                       transform=goal_transform(cfg.algo))
    loop.key_metric = "eval/success"
    return ctx.run(loop)


def check(cfg) -> None:
    """`algo=gciql` / `algo=gcbc` before any work: a dataset is named, the goal mix and switches fit."""
    from rlx.core.errors import ConfigError

    if not cfg.env.dataset:
        raise ConfigError(f"algo={cfg.algorithm} is offline: name a maze dataset with "
                          "env=pointmaze-medium|pointmaze-large "
                          "(make it with python scripts/hilp_maze.py --datasets-only)")
    check_goal_mix(cfg.algo.p_curgoal, cfg.algo.p_trajgoal, cfg.algo.p_randomgoal)
    OfflineActorCritic.check_config(cfg.algo)


register("gciql", GCIQLConfig, "Goal-conditioned IQL (IQL value + AWR on (s, g), hindsight goals), offline "
         "(preset gcbc: behavior cloning on future goals)", default_env="pointmaze-medium", check=check)(
    train_goal_conditioned)
