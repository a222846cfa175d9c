"""Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347), discrete and
continuous actions, with the implementation details of Huang et al. 2022 ("The 37
Implementation Details of PPO"): orthogonal init, advantage normalization per minibatch,
value clipping, global gradient clipping, linear learning-rate annealing.

The clipped surrogate and value losses are module-level functions so the sequence (RLHF,
CPPO) and diffusion (DDPO) learners share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.registry import register
from rlx.core.buffers import shuffled_minibatches
from rlx.core.checkpoint import Saveable
from rlx.core.learner import make_optimizer, optimizer_step
from rlx.core.loops import OnPolicyLoop, evaluate_policy
from rlx.core.nets import ACTIVATIONS, MLP, Categorical, GaussianHead, RunningMeanStd
from rlx.core.ranges import bounded, count, each, nonneg, one_of, positive, unit
from rlx.envs.registry import make_env, make_vec_env

__all__ = ["PPO", "PPOConfig", "clipped_surrogate", "value_loss", "explained_variance"]


@dataclass
class PPOConfig:
    """PPO hyperparameters. Defaults are CleanRL's `ppo.py` (classic control) with a shorter
    rollout, more epochs and a higher learning rate, which solve CartPole-v1 (eval 500) within
    100k steps on 8 envs; `algo=ppo_mujoco` holds CleanRL's MuJoCo settings."""

    lr: float = positive(1e-3)  # Adam learning rate
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over the run
    num_steps: int = count(64)  # rollout length T per env; a batch is T x env.num_envs transitions
    gamma: float = bounded(0.99, 0, 1, "(]")  # discount
    gae_lambda: float = unit(0.95)  # GAE lambda (Schulman et al. 2016)
    num_minibatches: int = count(4)  # minibatches per epoch
    update_epochs: int = count(10)  # passes over each rollout
    clip_coef: float = positive(0.2)  # surrogate clipping epsilon (PPO paper eq. 7)
    clip_vloss: bool = True  # clip the value loss around the old values as well
    ent_coef: float = nonneg(0.01)  # entropy bonus coefficient
    vf_coef: float = nonneg(0.5)  # value loss coefficient
    max_grad_norm: float = nonneg(0.5)  # global gradient-norm clip (0: off)
    norm_adv: bool = True  # normalize advantages per minibatch
    target_kl: float | None = positive(None)  # stop the epoch loop early when approx KL exceeds this
    hidden: list[int] = each(lambda: [64, 64], 1)  # hidden sizes of actor and critic MLPs
    activation: str = one_of("tanh", ACTIVATIONS)  # hidden activation (tanh, relu, gelu, silu, elu)
    normalize_obs: bool = False  # running mean/std observation normalization (clipped to +-10)
    normalize_reward: bool = False  # scale rewards by the running std of the discounted return
    log_std_init: float = 0.0  # initial log std of the Gaussian policy (continuous actions)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float,
                      weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped objective as a loss (PPO eq. 7, negated):
    mean( max(-A r, -A clip(r, 1-eps, 1+eps)) ) with r = exp(logp - old_logp).
    `weight` gives per-sample weights (CPPO's alpha(x)); the mean is then weighted."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    per_sample = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    loss = per_sample.mean() if weight is None else (weight * per_sample).mean()
    with torch.no_grad():
        info = {
            "train/approx_kl": ((ratio - 1) - log_ratio).mean(),  # k3 estimator, Schulman 2020
            "train/clipfrac": ((ratio - 1).abs() > clip).float().mean(),
        }
    return loss, info


def value_loss(value: torch.Tensor, old_value: torch.Tensor, ret: torch.Tensor, clip: float | None) -> torch.Tensor:
    """0.5 * (V - R)^2, or its clipped form max((V - R)^2, (V_old + clip(V - V_old) - R)^2)."""
    unclipped = (value - ret).pow(2)
    if clip is None:
        return 0.5 * unclipped.mean()
    clipped = (old_value + (value - old_value).clamp(-clip, clip) - ret).pow(2)
    return 0.5 * torch.max(unclipped, clipped).mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


class PPO(Saveable):
    """Actor-critic PPO learner for a Box observation space and a Discrete or Box action space.

    Usable on its own: `PPO(PPOConfig(), env.observation_space, env.action_space)`; then
    `act(obs)`, `value(obs)`, `update(batch)` where `batch` is a `[T, N]` TensorDict with
    `obs, action, logp, value, adv, ret` (see `rlx.core.loops.OnPolicyLoop`).
    """

    def __init__(self, cfg: PPOConfig, observation_space: gym.Space, action_space: gym.Space,
                 total_updates: int | None = None, device: str | torch.device = "cpu"):
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(f"PPO needs a Box observation space, got {observation_space}; flatten it with a wrapper")
        self.cfg, self.device = cfg, torch.device(device)
        self.gamma, self.gae_lambda = cfg.gamma, cfg.gae_lambda
        obs_dim = int(np.prod(observation_space.shape))
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"PPO supports Discrete and Box action spaces, got {action_space}")
        hidden, act = tuple(cfg.hidden), cfg.activation
        self.critic = MLP(obs_dim, 1, hidden, act, out_gain=1.0)
        if self.discrete:
            self.actor = MLP(obs_dim, int(action_space.n), hidden, act, out_gain=0.01)
        else:
            act_dim = int(np.prod(action_space.shape))
            self.actor = nn.Sequential(MLP(obs_dim, hidden[-1], hidden[:-1], act), nn.Tanh() if act == "tanh" else nn.ReLU(),
                                       GaussianHead(hidden[-1], act_dim, log_std_init=cfg.log_std_init))
        self.obs_rms = RunningMeanStd((obs_dim,)) if cfg.normalize_obs else None
        self.modules = nn.ModuleDict({"actor": self.actor, "critic": self.critic}).to(self.device)
        self.optimizer = make_optimizer(self.modules.parameters(), cfg.lr, eps=1e-5)
        self.scheduler = None
        if cfg.anneal_lr and total_updates:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda i: max(1.0 - i / total_updates, 0.0))

    # ---------------------------------------------------------------- acting
    def preprocess(self, obs: torch.Tensor, update_stats: bool = False) -> torch.Tensor:
        obs = obs.to(self.device, torch.float32).flatten(1)  # [B, obs_dim]
        if self.obs_rms is None:
            return obs
        if update_stats:
            self.obs_rms.update(obs)
        return self.obs_rms.normalize(obs)

    def dist(self, x: torch.Tensor):
        return Categorical(self.actor(x)) if self.discrete else self.actor(x)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        """Stochastic acting is data collection: it also updates the observation statistics.
        Returns the processed observation under `obs` so the rollout stores what the policy saw."""
        x = self.preprocess(obs, update_stats=not deterministic)
        dist = self.dist(x)
        action = dist.mode() if deterministic else dist.sample()
        return TensorDict({"action": action, "logp": dist.log_prob(action), "value": self.critic(x).squeeze(-1),
                           "obs": x}, batch_size=[x.shape[0]])

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.preprocess(obs)).squeeze(-1)

    # ---------------------------------------------------------------- learning
    def loss(self, mb: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        dist = self.dist(mb["obs"])
        logp, entropy = dist.log_prob(mb["action"]), dist.entropy().mean()
        adv = mb["adv"]
        if cfg.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss, info = clipped_surrogate(logp, mb["logp"], adv, cfg.clip_coef)
        v = self.critic(mb["obs"]).squeeze(-1)
        v_loss = value_loss(v, mb["value"], mb["ret"], cfg.clip_coef if cfg.clip_vloss else None)
        loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        info.update({"loss/policy": pg_loss.detach(), "loss/value": v_loss.detach(), "loss/entropy": entropy.detach()})
        return loss, info

    def update(self, batch: TensorDict) -> dict[str, float]:
        """Minibatch epochs over a `[T, N]` rollout (flattened to T*N rows, as plain tensors);
        metrics stay on the device until one conversion at the end."""
        cfg = self.cfg
        flat = {k: batch[k].flatten(0, 1) for k in ("obs", "action", "logp", "value", "adv", "ret")}  # [T*N, ...]
        mb_size = max(flat["obs"].shape[0] // cfg.num_minibatches, 1)
        rows: list[torch.Tensor] = []
        for _ in range(cfg.update_epochs):
            for mb in shuffled_minibatches(flat, mb_size):
                loss, info = self.loss(mb)
                optimizer_step(self.optimizer, loss, max_grad_norm=cfg.max_grad_norm)
                rows.append(torch.stack(list(info.values())))
            if cfg.target_kl is not None and info["train/approx_kl"] > cfg.target_kl:
                break
        metrics = dict(zip(info, torch.stack(rows).mean(0).tolist()))
        metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["train/explained_variance"] = explained_variance(flat["value"], flat["ret"])
        if self.scheduler is not None:
            self.scheduler.step()
        return metrics

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"modules": self.modules.state_dict(), "optimizer": self.optimizer.state_dict(),
                "obs_rms": self.obs_rms.state_dict() if self.obs_rms is not None else None,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.obs_rms is not None and state.get("obs_rms") is not None:
            self.obs_rms.load_state_dict(state["obs_rms"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _clip_to(space: gym.Space):
    if not isinstance(space, gym.spaces.Box):
        return lambda a: a
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return lambda a: torch.max(torch.min(a, high.to(a.device)), low.to(a.device))


@register("ppo", PPOConfig, "Proximal Policy Optimization: discrete and continuous actions, on-policy")
def train(ctx) -> dict:
    """Entry point of `python -m rlx.train algo=ppo`: vector env -> OnPolicyLoop."""
    cfg = ctx.cfg
    envs = make_vec_env(cfg.env)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = gym.wrappers.vector.ClipAction(envs)  # the Gaussian is unbounded; the env is not
    per_update = cfg.algo.num_steps * envs.num_envs
    learner = PPO(cfg.algo, envs.single_observation_space, envs.single_action_space,
                  total_updates=math.ceil(cfg.trainer.total_steps / per_update), device=ctx.device)
    clip = _clip_to(envs.single_action_space)

    def evaluate() -> dict[str, float]:
        return evaluate_policy(lambda obs: clip(learner.act(obs, deterministic=True)["action"]),
                               partial(make_env, cfg.env, check=False), cfg.trainer.eval_episodes, seed=cfg.seed + 10_000)

    loop = OnPolicyLoop(learner, envs, cfg.trainer, cfg.algo.num_steps, ctx.logger, evaluate, cfg.seed,
                        normalize_reward=cfg.algo.normalize_reward)
    try:
        return ctx.run(loop)
    finally:
        envs.close()
