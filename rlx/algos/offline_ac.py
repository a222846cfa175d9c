"""Offline actor-critic: value learning x policy extraction (Park, Frans, Levine, Kumar 2024,
"Is Value Learning Really the Main Bottleneck in Offline RL?", section 4), one learner.

Value learning (`value=`):
* `iql`: Implicit Q-Learning (Kostrikov et al. 2022, arXiv:2110.06169): expectile V (eq. 5),
  twin Q regressed on r + gamma V(s') (eq. 6), Polyak target Q feeding V.
* `sarsa`: the same with expectile 0.5: V(s) = E_{a~D} Q(s, a), so Q is fitted on dataset
  actions only and evaluates the behavior policy (SARSA-style fitted Q; IQL section 4.1).
* `td3`: TD3 critics with target-policy smoothing (Fujimoto & Gu 2021, TD3+BC, sec. 5).
* `none`: no critic (behavior cloning).

Policy extraction (`extraction=`):
* `awr`: max E_D[ min(exp(alpha (Q(s,a) - V(s))), w_max) log pi(a|s) ] (IQL eq. 7, Peng et al. 2019).
* `ddpg_bc`: min E_D[ -Q(s, mu(s)) / stopgrad(E|Q|) + alpha ||mu(s) - a||^2 ] (Park et al. eq. 3:
  Q the twins' mean, the squared error summed over action dims; `bc_alpha`).
* `td3bc`: TD3+BC's own objective (Fujimoto & Gu 2021, eq. 3 and their code):
  min E_D[ -lambda Q_1(s, mu(s)) + mean_j (mu_j(s) - a_j)^2 ], lambda = alpha / stopgrad(E|Q_1|),
  alpha = 2.5 (`td3bc_alpha`); the squared error is averaged over action dims (F.mse_loss).
* `bc`: max E_D[ log pi(a|s) ].

Test-time policy improvement (`test_time=`, Park et al. section 6) lives in
`rlx.algos.adapt`. Actions are learned in [-1, 1] (the env's Box mapped affinely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from rlx.algos.registry import register
from rlx.core.checkpoint import Saveable
from rlx.core.learner import frozen_copy, host_metrics, make_optimizer, optimizer_step, soft_update
from rlx.core.nets import MLP, EnsembleQ, Normal, legacy_ensemble_error
from rlx.core.ranges import bounded, count, each, nonneg, positive

__all__ = ["OfflineActorCritic", "ActorCriticConfig", "IQLConfig", "expectile_loss", "awr_weights",
           "ddpg_bc_loss", "td3bc_actor_loss", "Actor"]

VALUES = ("iql", "sarsa", "td3", "none")
EXTRACTIONS = ("awr", "ddpg_bc", "td3bc", "bc")
TEST_TIME = ("none", "opex", "ttt")


@dataclass
class ActorCriticConfig:
    """The fields every offline actor-critic reads (value learning x policy extraction); defaults
    are IQL on D4RL locomotion (CORL's iql.py). Registered learners extend it."""

    value: str = "iql"  # value learning: iql | sarsa | td3 | none
    extraction: str = "awr"  # policy extraction: awr | ddpg_bc | td3bc | bc
    expectile: float = bounded(0.7, 0, 1, "()")  # IQL expectile tau for V (eq. 5); sarsa forces 0.5
    awr_alpha: float = nonneg(3.0)  # AWR inverse temperature alpha in exp(alpha * A) (IQL's beta)
    awr_max_weight: float = positive(100.0)  # clip of the AWR weights
    bc_alpha: float = nonneg(0.4)  # ddpg_bc: weight of the BC term (squared error summed over action dims)
    td3bc_alpha: float = positive(2.5)  # td3bc: TD3+BC's alpha in lambda = alpha / E|Q| (the weight of the Q term)
    gamma: float = bounded(0.99, 0, 1, "(]")  # discount
    tau: float = bounded(0.005, 0, 1, "(]")  # Polyak rate of the target networks
    actor_lr: float = positive(3e-4)  # Adam learning rate of the policy
    critic_lr: float = positive(3e-4)  # Adam learning rate of Q and V
    actor_cosine_decay: bool = True  # cosine-decay the actor learning rate over trainer.total_steps (IQL)
    hidden: list[int] = each(lambda: [256, 256], 1)  # hidden sizes of every MLP
    layer_norm: bool = False  # LayerNorm in the critics' hidden layers
    batch_size: int = count(256)  # transitions per gradient step
    normalize_obs: bool = True  # standardize observations with the dataset's mean/std


@dataclass
class IQLConfig(ActorCriticConfig):
    """`algo=iql` (presets `algo=bc`, `algo=td3bc`, `algo=iql_sarsa`, `algo=iql_ddpgbc` in
    rlx/configs/algo/): the actor-critic on a reward-labelled dataset, with TD3 critics and
    evaluation-time improvement."""

    normalize_reward: bool = True  # scale rewards by 1000 / (max - min episode return) (IQL locomotion)
    policy_noise: float = nonneg(0.2)  # td3: target-policy smoothing noise std (in [-1, 1] action units)
    noise_clip: float = nonneg(0.5)  # td3: clip of that noise
    policy_delay: int = count(2)  # td3: actor and targets update every this many critic updates
    test_time: str = "none"  # evaluation-time improvement: none | opex | ttt
    opex_beta: float = nonneg(0.1)  # OPEX step size beta in a = mu(s) + beta grad_a Q(s, mu(s))
    ttt_lr: float = positive(1e-4)  # TTT: learning rate of the test-time policy updates
    ttt_alpha: float = nonneg(1.0)  # TTT: weight of the penalty ||mu(s) - mu_0(s)||^2 to the offline policy
    ttt_batch: int = count(256)  # TTT: visited states per test-time gradient step
    ttt_every: int = count(1)  # TTT: one policy update every this many evaluation env steps


def expectile_loss(diff: torch.Tensor, expectile: float, sign: torch.Tensor | None = None) -> torch.Tensor:
    """IQL eq. 5: L_tau(u) = |tau - 1(u < 0)| u^2 with u = Q(s, a) - V(s), averaged. With `sign`,
    the asymmetric weight follows sign's sign instead of u's (HILP/HIQL: the target-net advantage)."""
    weight = torch.where((diff if sign is None else sign) < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def awr_weights(adv: torch.Tensor, alpha: float, max_weight: float) -> torch.Tensor:
    """exp(alpha * A), clipped at `max_weight` (IQL eq. 7; exp is clamped before overflow)."""
    return torch.exp((alpha * adv).clamp(max=math.log(max_weight))).clamp(max=max_weight)


def ddpg_bc_loss(q: torch.Tensor, policy_action: torch.Tensor, data_action: torch.Tensor,
                 alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Park et al. eq. 3: -Q / stopgrad(mean |Q|) + alpha * ||mu(s) - a||^2 (summed over action
    dims, averaged over the batch). Returns (loss, bc term)."""
    lam = 1.0 / q.abs().mean().detach().clamp_min(1e-6)
    bc = (policy_action - data_action).pow(2).sum(-1).mean()
    return -(lam * q).mean() + alpha * bc, bc


def td3bc_actor_loss(q1: torch.Tensor, policy_action: torch.Tensor, data_action: torch.Tensor,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TD3+BC (Fujimoto & Gu 2021, eq. 3): -lambda mean(Q_1) + F.mse_loss(mu(s), a) with
    lambda = alpha / stopgrad(mean |Q_1|); the BC term is averaged over batch and action dims.
    Returns (loss, bc term)."""
    lam = alpha / q1.abs().mean().detach().clamp_min(1e-6)
    bc = F.mse_loss(policy_action, data_action)
    return -lam * q1.mean() + bc, bc


class Actor(nn.Module):
    """Gaussian policy with mean tanh(MLP(s)) in [-1, 1] and a state-independent log std
    (IQL's locomotion actor); the deterministic action is the mean."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net = MLP(obs_dim, act_dim, hidden, "relu", out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))

    def dist(self, obs: torch.Tensor) -> Normal:
        return Normal(self(obs), self.log_std.clamp(-5.0, 2.0))


class OfflineActorCritic(Saveable):
    """One learner for IQL / SARSA / TD3 values x AWR / DDPG+BC / BC extraction.

    `OfflineActorCritic(IQLConfig(), obs_space, act_space)`; `set_dataset_stats(obs)` fixes the
    observation normalizer; `update(batch)` takes a TensorDict with `obs, action, reward,
    next_obs, terminated` (env-scale actions); `act(obs)` returns env-scale actions.
    """

    def __init__(self, cfg: ActorCriticConfig, observation_space: gym.Space, action_space: gym.Space,
                 total_steps: int | None = None, device: str | torch.device = "cpu"):
        self.check_config(cfg)
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"the offline actor-critic needs a continuous (Box) action space, got {action_space}")
        self.cfg, self.device = cfg, torch.device(device)
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.act_low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self.act_high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.actor = Actor(obs_dim, act_dim, cfg.hidden)
        mods = {"actor": self.actor}
        if cfg.value != "none":
            self.q = EnsembleQ(obs_dim, act_dim, 2, hidden=cfg.hidden, act="relu", layer_norm=cfg.layer_norm)
            mods["q"] = self.q
            if cfg.value in ("iql", "sarsa"):
                self.v = MLP(obs_dim, 1, cfg.hidden, "relu", layer_norm=cfg.layer_norm)
                mods["v"] = self.v
        self.modules = nn.ModuleDict(mods).to(self.device)
        self.modules.register_buffer("obs_mean", torch.zeros(obs_dim, device=self.device))
        self.modules.register_buffer("obs_std", torch.ones(obs_dim, device=self.device))
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.actor_lr)
        self.actor_sched = None
        if cfg.actor_cosine_decay and total_steps:
            self.actor_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, total_steps)
        if cfg.value != "none":
            self.q_target = frozen_copy(self.q)
            critic_params = list(self.q.parameters()) + (list(self.v.parameters()) if hasattr(self, "v") else [])
            self.critic_opt = make_optimizer(critic_params, cfg.critic_lr)
            if cfg.value == "td3":
                self.actor_target = frozen_copy(self.actor)
        self.expectile = 0.5 if cfg.value == "sarsa" else cfg.expectile
        self.steps = 0

    @staticmethod
    def check_config(cfg: ActorCriticConfig) -> None:
        """One-line errors (ValueError) for switch values and combinations that cannot work."""
        for key, value, choices in (("value", cfg.value, VALUES), ("extraction", cfg.extraction, EXTRACTIONS)):
            if value not in choices:
                raise ValueError(f"unknown algo.{key}={value!r}; choose one of {', '.join(choices)}")
        if cfg.value == "td3" and not isinstance(cfg, IQLConfig):
            raise ValueError("algo.value=td3 needs TD3's fields, which only algo=iql carries; use iql|sarsa|none")
        if cfg.extraction in ("awr", "ddpg_bc", "td3bc") and cfg.value == "none":
            raise ValueError(f"algo.extraction={cfg.extraction} needs a critic; set algo.value=iql|sarsa|td3")
        if cfg.extraction == "awr" and cfg.value == "td3":
            raise ValueError("algo.extraction=awr needs a V function; use algo.value=iql|sarsa with awr")

    # ---------------------------------------------------------------- data scaling
    def set_dataset_stats(self, obs: torch.Tensor) -> None:
        """Fix the observation normalizer from the dataset (no-op unless normalize_obs)."""
        if self.cfg.normalize_obs:
            self.modules.obs_mean.copy_(obs.mean(0))
            self.modules.obs_std.copy_(obs.std(0).clamp_min(1e-3))

    def norm_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.to(self.device, torch.float32).flatten(1) - self.modules.obs_mean) / self.modules.obs_std

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        """Env-scale action -> [-1, 1]."""
        return (2 * (action.to(self.device, torch.float32) - self.act_low) / (self.act_high - self.act_low) - 1).clamp(-1, 1)

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        return self.act_low + (action + 1) * (self.act_high - self.act_low) / 2

    # ---------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        """Env-scale actions [B, act_dim]: the mean tanh(MLP(s)) when deterministic (evaluation),
        else a draw of the Gaussian clipped to [-1, 1]."""
        x = self.norm_obs(obs)
        a = self.actor(x) if deterministic else self.actor.dist(x).sample().clamp(-1, 1)
        return TensorDict({"action": self.to_env(a)}, batch_size=[x.shape[0]])

    def q_value(self, obs_n: torch.Tensor, action_unit: torch.Tensor) -> torch.Tensor:
        """Mean of the twin Qs at normalized obs and [-1, 1] actions: [B]."""
        return self.q(obs_n, action_unit).mean(0)

    # ---------------------------------------------------------------- losses
    def value_loss(self, obs, q) -> tuple[torch.Tensor, dict]:
        """IQL eq. 5; `q` is the target twin-Q minimum at the dataset action."""
        v = self.v(obs).squeeze(-1)
        return expectile_loss(q - v, self.expectile), {"train/v_mean": v.mean()}

    def q_loss(self, obs, action, reward, next_obs, terminated) -> tuple[torch.Tensor, dict]:
        """IQL eq. 6 (target r + gamma (1 - terminated) V(s')) or TD3's clipped double-Q target."""
        with torch.no_grad():
            if self.cfg.value == "td3":
                noise = (torch.randn_like(action) * self.cfg.policy_noise).clamp(-self.cfg.noise_clip, self.cfg.noise_clip)
                next_a = (self.actor_target(next_obs) + noise).clamp(-1, 1)
                next_v = self.q_target(next_obs, next_a).min(0).values
            else:
                next_v = self.v(next_obs).squeeze(-1)
            target = reward + self.cfg.gamma * (1.0 - terminated.float()) * next_v  # truncated rows bootstrap
        q = self.q(obs, action)  # [2, B]
        return (q - target).pow(2).mean(1).sum(), {"train/q_mean": q.mean()}  # sum over the twins of the batch MSE

    def actor_loss(self, obs, action, q_data: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """`q_data`: the target twin-Q minimum at the dataset action (AWR's advantage)."""
        cfg = self.cfg
        if cfg.extraction == "bc":
            loss = -self.actor.dist(obs).log_prob(action).mean()
            return loss, {}
        if cfg.extraction == "awr":
            with torch.no_grad():
                adv = q_data - self.v(obs).squeeze(-1)  # with the V just updated, as in IQL
                w = awr_weights(adv, cfg.awr_alpha, cfg.awr_max_weight)
            loss = -(w * self.actor.dist(obs).log_prob(action)).mean()
            return loss, {"train/adv_mean": adv.mean(), "train/awr_weight_mean": w.mean()}
        mu = self.actor(obs)
        if cfg.extraction == "td3bc":  # Q_1 only, as TD3+BC's code
            loss, bc = td3bc_actor_loss(self.q(obs, mu, member=0), mu, action, cfg.td3bc_alpha)
            return loss, {"train/bc_mse": bc}
        loss, bc = ddpg_bc_loss(self.q_value(obs, mu), mu, action, cfg.bc_alpha)
        return loss, {"train/bc_mse": bc}

    # ---------------------------------------------------------------- learning
    def update(self, batch: TensorDict) -> dict[str, float]:
        obs, next_obs = self.norm_obs(batch["obs"]), self.norm_obs(batch["next_obs"])
        action = self.to_unit(batch["action"])
        reward = batch["reward"].to(self.device, torch.float32).reshape(-1)
        terminated = batch["terminated"].to(self.device).reshape(-1)
        info: dict[str, torch.Tensor] = {}
        q_data = None
        if hasattr(self, "v"):  # one target-Q pass serves the V loss and the AWR advantage
            with torch.no_grad():
                q_data = self.q_target(obs, action).min(0).values
        if self.cfg.value != "none":
            critic_loss, qi = self.q_loss(obs, action, reward, next_obs, terminated)
            info.update(qi)
            info["loss/q"] = critic_loss.detach()
            if hasattr(self, "v"):
                v_loss, vi = self.value_loss(obs, q_data)
                info.update({**vi, "loss/value": v_loss.detach()})
                critic_loss = critic_loss + v_loss
            optimizer_step(self.critic_opt, critic_loss)
        self.steps += 1
        if self.cfg.value != "td3" or self.steps % self.cfg.policy_delay == 0:
            a_loss, ai = self.actor_loss(obs, action, q_data)
            optimizer_step(self.actor_opt, a_loss)
            info.update(ai)
            info["loss/actor"] = a_loss.detach()
            if self.actor_sched is not None:
                self.actor_sched.step()
            if self.cfg.value == "td3":
                soft_update(self.actor_target, self.actor, self.cfg.tau)
        if self.cfg.value != "none" and (self.cfg.value != "td3" or self.steps % self.cfg.policy_delay == 0):
            soft_update(self.q_target, self.q, self.cfg.tau)
        return host_metrics(info)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {"modules": self.modules.state_dict(), "actor_opt": self.actor_opt.state_dict(), "steps": self.steps,
                 "actor_sched": self.actor_sched.state_dict() if self.actor_sched is not None else None}
        if self.cfg.value != "none":
            state.update(critic_opt=self.critic_opt.state_dict(), q_target=self.q_target.state_dict())
            if self.cfg.value == "td3":
                state["actor_target"] = self.actor_target.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        legacy_ensemble_error(state["modules"])
        self.modules.load_state_dict(state["modules"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.steps = state["steps"]
        if self.actor_sched is not None and state.get("actor_sched") is not None:
            self.actor_sched.load_state_dict(state["actor_sched"])
        if self.cfg.value != "none":
            self.critic_opt.load_state_dict(state["critic_opt"])
            self.q_target.load_state_dict(state["q_target"])
            if self.cfg.value == "td3":
                self.actor_target.load_state_dict(state["actor_target"])


# -------------------------------------------------------------------------- entry points


def scale_rewards(store, cfg: IQLConfig) -> dict[str, float]:
    """IQL's locomotion reward scaling r * 1000 / (max - min episode return), in place on the
    store's (already transformed) rewards; skipped when all episode returns are equal."""
    if not cfg.normalize_reward:
        return {}
    returns = store.episode_returns()
    spread = float(returns.max() - returns.min())
    if spread <= 1e-8:
        return {"data/reward_scale": 1.0}
    store.data["reward"] = store.data["reward"] * (1000.0 / spread)
    return {"data/reward_scale": 1000.0 / spread}


def check(cfg) -> None:
    """`algo=iql` (and its presets) before any work: a dataset is named, the switches fit."""
    from rlx.core.errors import ConfigError

    if not cfg.env.dataset:
        raise ConfigError(f"algo={cfg.algorithm} is offline: name a dataset with env=<dataset preset> (e.g. "
                          "env=hopper-medium) or env.dataset=<name|path.hdf5|minari:id>")
    if cfg.algo.test_time not in TEST_TIME:
        raise ConfigError(f"unknown algo.test_time={cfg.algo.test_time!r}; choose one of {', '.join(TEST_TIME)}")
    OfflineActorCritic.check_config(cfg.algo)


def train_offline(ctx) -> dict:
    """`python -m rlx.train algo=iql|bc|td3bc env=<dataset preset>`: dataset -> reward transform
    -> ReplayBuffer -> OfflineLoop, deterministic evaluation (optionally OPEX/TTT) in env.id."""
    from functools import partial

    from rlx.algos.adapt import evaluate_offline
    from rlx.core.buffers import ReplayBuffer
    from rlx.core.loops import OfflineLoop
    from rlx.envs.datasets import check_spaces, load_dataset
    from rlx.envs.registry import make_env
    from rlx.envs.rewards import transform_rewards

    from rlx.core.errors import DatasetError

    cfg = ctx.cfg
    data = load_dataset(cfg.env.dataset)
    env_id = data.metadata.get("env_id")
    if env_id and cfg.env.id != env_id and not cfg.env.entry_point:
        raise DatasetError(f"dataset {cfg.env.dataset!r} was collected in {env_id} but env.id={cfg.env.id}; "
                                f"set env.id={env_id}")
    store = data.episodes
    store.data["reward"] = transform_rewards(store.data["reward"], cfg.reward)
    data_info = scale_rewards(store, cfg.algo)
    env = make_env(cfg.env, check=False)
    check_spaces(data, env.observation_space, env.action_space, cfg.env.dataset)
    learner = OfflineActorCritic(cfg.algo, env.observation_space, env.action_space, cfg.trainer.total_steps, ctx.device)
    env.close()
    learner.set_dataset_stats(store.data["obs"])
    buffer = ReplayBuffer.from_episodes(store, ctx.device)
    env_fn = partial(make_env, cfg.env, check=False)

    def evaluate() -> dict[str, float]:
        out = evaluate_offline(learner, env_fn, cfg.trainer.eval_episodes, cfg.seed + 10_000, cfg.algo.test_time)
        for key, score in (("eval/normalized_score", data.normalized_score(out["eval/return_mean"])),
                           ("eval/normalized_score_local", data.normalized_score_local(out["eval/return_mean"]))):
            if score is not None:  # D4RL's scale for its envs; the dataset's own references
                out[key] = score
        return out

    if ctx.resume_from is None:  # a resumed run already has these in its metrics
        ctx.logger.log(0, {**data_info, "data/rows": float(store.num_rows), "data/episodes": float(store.num_episodes)})
    loop = OfflineLoop(learner, buffer, cfg.trainer, cfg.algo.batch_size, ctx.logger, evaluate, cfg.seed)
    loop.key_metric = "eval/normalized_score" if data.normalized_score(0.0) is not None else "eval/return_mean"
    return ctx.run(loop)


register("iql", IQLConfig, "Offline actor-critic: IQL/SARSA/TD3 values, AWR, DDPG+BC or BC extraction, OPEX/TTT "
         "(presets bc, td3bc, iql_sarsa, iql_ddpgbc)", default_env="hopper-medium", check=check)(train_offline)
