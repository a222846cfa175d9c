"""Twin Delayed DDPG (Fujimoto, van Hoof, Meger 2018, arXiv:1802.09477), on
`rlx.core.offpolicy.OffPolicyLoop`:

* clipped double Q: both critics regress on r + gamma (1 - terminated) min_i Q'_i(s', a');
* target policy smoothing: a' = clip(mu'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), -1, 1);
* delayed updates: the actor (max Q_1(s, mu(s))) and all targets (Polyak, tau) update every
  `policy_delay` critic updates;
* exploration: mu(s) + N(0, exploration_noise), clipped to the bounds.

Defaults are CleanRL's `td3_continuous_action.py`. Actions are learned in [-1, 1] (noise
scales are in those units, i.e. fractions of the half-range, as CleanRL's `action_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.registry import register
from rlx.algos.sac import (
    BoxScaler,
    check_off_policy,
    check_spaces,
    closed_form,
    flat_obs,
    q_action_grad,
    q_regression_step,
    soft_q_target,
    train_off_policy,
    transitions,
)
from rlx.core.checkpoint import Saveable
from rlx.core.learner import frozen_copy, host_metrics, make_optimizer, optimizer_step, soft_update
from rlx.core.nets import MLP, EnsembleQ, legacy_ensemble_error
from rlx.core.ranges import bounded, count, each, nonneg, positive

__all__ = ["TD3", "TD3Config"]


@dataclass
class TD3Config:
    """TD3 hyperparameters; defaults are CleanRL's `td3_continuous_action.py` (MuJoCo)."""

    gamma: float = bounded(0.99, 0, 1, "(]")  # discount
    tau: float = bounded(0.005, 0, 1, "(]")  # Polyak rate of the target actor and critics
    batch_size: int = count(256)  # transitions per gradient step
    buffer_size: int = count(1_000_000)  # replay buffer capacity (transitions)
    learning_starts: int = nonneg(25_000)  # env steps of uniform random actions before the first update (CleanRL TD3)
    utd: float = positive(1.0)  # gradient updates per env step (update-to-data ratio)
    lr: float = positive(3e-4)  # Adam learning rate of actor and critics
    exploration_noise: float = nonneg(0.1)  # std of the Gaussian exploration noise (in [-1, 1] action units)
    policy_noise: float = nonneg(0.2)  # std of the target-policy smoothing noise
    noise_clip: float = nonneg(0.5)  # clip of the smoothing noise
    policy_delay: int = count(2)  # actor and target updates every this many critic updates
    hidden: list[int] = each(lambda: [256, 256], 1)  # hidden sizes of actor and critics
    steps_per_iteration: int = count(1_000)  # env steps per loop iteration (the grain of logging and checkpoints)


class TD3(Saveable):
    """`TD3(TD3Config(), obs_space, act_space)`; `act(obs)` is mu(s) + exploration noise in the
    env's bounds (`deterministic=True`: mu(s)); `update(batch)` is one critic step, plus the
    actor and target steps every `policy_delay` calls."""

    def __init__(self, cfg: TD3Config, observation_space: gym.Space, action_space: gym.Space,
                 device: str | torch.device = "cpu"):
        obs_dim, act_dim = check_spaces("td3", observation_space, action_space)
        if cfg.policy_delay < 1:
            raise ValueError(f"algo.policy_delay={cfg.policy_delay} must be >= 1")
        self.cfg, self.device = cfg, torch.device(device)
        self.scale = BoxScaler(action_space, self.device)
        self.actor = nn.Sequential(MLP(obs_dim, act_dim, cfg.hidden, "relu", orthogonal=False), nn.Tanh())
        self.q = EnsembleQ(obs_dim, act_dim, 2, hidden=cfg.hidden, act="relu", orthogonal=False)
        self.modules = nn.ModuleDict({"actor": self.actor, "q": self.q}).to(self.device)
        self.actor_target, self.q_target = frozen_copy(self.actor), frozen_copy(self.q)
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.lr)
        self.q_opt = make_optimizer(self.q.parameters(), cfg.lr)
        self.steps = 0
        self.closed_form = True  # the critics' gradients in closed form (rlx.algos.sac.closed_form)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        x = flat_obs(obs, self.device)
        a = self.actor(x)
        if not deterministic:
            a = (a + self.cfg.exploration_noise * torch.randn_like(a)).clamp(-1, 1)
        return TensorDict({"action": self.scale.to_env(a)}, batch_size=[x.shape[0]])

    def smoothed_target(self, reward, next_obs, terminated) -> torch.Tensor:
        """r + gamma (1 - terminated) min_i Q'_i(s', clip(mu'(s') + clip(noise))) [B]."""
        cfg = self.cfg
        with torch.no_grad():
            mu = self.actor_target(next_obs)
            noise = (cfg.policy_noise * torch.randn_like(mu)).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_v = self.q_target(next_obs, (mu + noise).clamp(-1, 1)).min(0).values
            return soft_q_target(reward, terminated, next_v, cfg.gamma)

    def critic_loss(self, obs, action, reward, next_obs, terminated) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the twins of the batch MSE to the clipped double-Q target with smoothing."""
        target = self.smoothed_target(reward, next_obs, terminated)
        q = self.q(obs, action)  # [2, B]
        return (q - target).pow(2).mean(1).sum(), q

    def actor_loss(self, obs) -> torch.Tensor:
        """-E[ Q_1(s, mu(s)) ] (the first critic only, as in TD3)."""
        return -self.q(obs, self.actor(obs), member=0).mean()

    def update(self, batch: TensorDict) -> dict[str, float]:
        cfg = self.cfg
        obs, action, reward, next_obs, terminated = transitions(batch, self.device, self.scale)
        if closed_form(self, "critic_loss", TD3):
            target = self.smoothed_target(reward, next_obs, terminated)
            q_loss, q = q_regression_step(self.q, self.q_opt, obs, action, target)
        else:
            q_loss, q = self.critic_loss(obs, action, reward, next_obs, terminated)
            optimizer_step(self.q_opt, q_loss)
            q_loss, q = q_loss.detach(), q.detach()
        info = {"loss/q": q_loss, "train/q_mean": q.mean()}
        self.steps += 1
        if self.steps % cfg.policy_delay == 0:
            self.q.requires_grad_(False)  # the actor's gradient flows through Q's input only
            if closed_form(self, "actor_loss", TD3):  # dQ_1/da closed-form, autograd through mu only
                a = self.actor(obs)
                q1, dq_da = q_action_grad(self.q, obs, a, member=0)
                optimizer_step(self.actor_opt, -(a * dq_da).sum() / obs.shape[0])
                a_loss = -q1.mean()
            else:
                a_loss = self.actor_loss(obs)
                optimizer_step(self.actor_opt, a_loss)
                a_loss = a_loss.detach()
            self.q.requires_grad_(True)
            info["loss/actor"] = a_loss
            soft_update(self.actor_target, self.actor, cfg.tau)
            soft_update(self.q_target, self.q, cfg.tau)
        return host_metrics(info)

    def state_dict(self) -> dict:
        return {"modules": self.modules.state_dict(), "actor_target": self.actor_target.state_dict(),
                "q_target": self.q_target.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "q_opt": self.q_opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        legacy_ensemble_error(state["modules"])
        self.modules.load_state_dict(state["modules"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.q_target.load_state_dict(state["q_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.q_opt.load_state_dict(state["q_opt"])
        self.steps = state["steps"]


@register("td3", TD3Config, "TD3 (twin Q, target policy smoothing, delayed actor): continuous actions, off-policy",
          default_env="pendulum", check=check_off_policy)
def train(ctx) -> dict:
    return train_off_policy(ctx, TD3)
