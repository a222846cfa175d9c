"""Soft Actor-Critic (Haarnoja et al. 2018, arXiv:1812.05905: the version with automatic
entropy tuning), continuous actions, on `rlx.core.offpolicy.OffPolicyLoop`.

* Critic: twin Q (`EnsembleQ`, clipped double Q) regressed on the soft target
  r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s');
  truncated steps bootstrap from the true final observation.
* Actor: tanh-squashed Gaussian, min E[ alpha log pi(a|s) - min_i Q_i(s, a) ] by the
  reparameterization trick, every `policy_frequency` critic steps (then that many times, CleanRL).
* Temperature: min E[ -log(alpha) (log pi(a|s) + target_entropy) ], target -act_dim.
* Targets: Polyak averaging q' <- (1 - tau) q' + tau q after every critic step.

Defaults are CleanRL's `sac_continuous_action.py`. Actions are learned in [-1, 1] (the env's
Box mapped affinely); log-probabilities are in those units. The off-policy entry point
`train_off_policy` is shared with TD3 (`rlx.algos.td3`).
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
from torch.nn import functional as F

from rlx.algos.registry import register
from rlx.core.checkpoint import Saveable
from rlx.core.learner import (frozen_copy, grad_buffers, host_metrics, make_optimizer, optimizer_step, overridden,
                              soft_update)
from rlx.core.nets import MLP, EnsembleQ, legacy_ensemble_error
from rlx.core.ranges import bounded, count, each, nonneg, positive

__all__ = ["SAC", "SACConfig", "SquashedGaussianActor", "closed_form", "q_action_grad", "q_regression_step", "soft_q_target",
           "train_off_policy"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """SAC hyperparameters; defaults are CleanRL's `sac_continuous_action.py` (MuJoCo)."""

    gamma: float = bounded(0.99, 0, 1, "(]")  # discount
    tau: float = bounded(0.005, 0, 1, "(]")  # Polyak rate of the target critics
    batch_size: int = count(256)  # transitions per gradient step
    buffer_size: int = count(1_000_000)  # replay buffer capacity (transitions)
    learning_starts: int = nonneg(5_000)  # env steps of uniform random actions before the first update
    utd: float = positive(1.0)  # gradient updates per env step (update-to-data ratio)
    policy_lr: float = positive(3e-4)  # Adam learning rate of the actor
    q_lr: float = positive(1e-3)  # Adam learning rate of the critics (and of the temperature)
    policy_frequency: int = count(2)  # actor updates every this many critic updates (then this many at once)
    alpha: float = nonneg(0.2)  # entropy temperature when autotune is off
    autotune: bool = True  # learn alpha toward the target entropy
    target_entropy: float | None = bounded(None)  # None: -act_dim (any real number)
    hidden: list[int] = each(lambda: [256, 256], 1)  # hidden sizes of actor and critics
    steps_per_iteration: int = count(1_000)  # env steps per loop iteration (the grain of logging and checkpoints)


def soft_q_target(reward: torch.Tensor, terminated: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """r + gamma (1 - terminated) V(s'): no bootstrap through a termination; a truncated step
    (terminated False) bootstraps from its true final observation."""
    return reward + gamma * (1.0 - terminated.float()) * next_v


def _log_std(t: torch.Tensor) -> torch.Tensor:
    """tanh(raw) -> log std in [LOG_STD_MIN, LOG_STD_MAX]."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (t + 1)


def _draw(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reparameterized draw: (a = tanh(u), log pi(a|s) [B], std, eps), u = mean + std eps."""
    std = log_std.exp()
    eps = torch.randn_like(mean)
    u = torch.addcmul(mean, std, eps)
    # log N(u; mean, std) = -eps^2/2 - log std - log(2 pi)/2; log|tanh'(u)| = 2 (log 2 - u - softplus(-2u)):
    # summed, log pi = sum(2 (u + softplus(-2u)) - log std - eps^2/2) - A (log(2 pi)/2 + 2 log 2)
    z = F.softplus(u * -2.0).add_(u).mul_(2.0).sub_(log_std).addcmul_(eps, eps, value=-0.5)
    logp = z.sum(-1).sub_(mean.shape[-1] * (0.5 * math.log(2 * math.pi) + 2 * math.log(2.0)))
    return torch.tanh(u), logp, std, eps


class SquashedGaussianActor(nn.Module):
    """MLP -> (mean, log std) of a Gaussian over pre-tanh actions; log std squashed into
    [LOG_STD_MIN, LOG_STD_MAX] by tanh (CleanRL / SpinningUp); actions tanh(u) in (-1, 1)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net = MLP(obs_dim, 2 * act_dim, hidden, "relu", orthogonal=False)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(obs).chunk(2, dim=-1)
        return mean, _log_std(torch.tanh(raw))

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized draw a = tanh(u) and log pi(a|s) [B] (Gaussian log-density of u minus
        log|d tanh(u)/du|, computed from u itself, not from atanh(a))."""
        a, logp, _, _ = _draw(*self(obs))
        return a, logp

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])

    @torch.no_grad()
    def sample_nograd(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample(obs)` without autograd (the same draw): through `sample_cached`'s direct
        matrix products where the MLP allows, skipping the modules' call overhead (acting on one
        row every env step, the critics' targets every update)."""
        if self.closed_form_backward:
            return self.sample_cached(obs)[:2]
        return self.sample(obs)

    @property
    def closed_form_backward(self) -> bool:
        """Whether `sample_cached` / `backward_cached` apply: Linear layers and ReLUs only."""
        return all(isinstance(m, (nn.Linear, nn.ReLU)) for m in self.net)

    @torch.no_grad()
    def sample_cached(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """`sample(obs)` without autograd (the same draw), keeping what `backward_cached` needs:
        (a, log pi(a|s), cache)."""
        inputs, x = [], obs
        for m in self.net:
            if isinstance(m, nn.Linear):
                inputs.append(x)
                x = torch.addmm(m.bias, x, m.weight.t())
            else:
                x = x.relu_()
        mean, raw = x.chunk(2, dim=-1)
        t = torch.tanh(raw)
        a, logp, std, eps = _draw(mean, _log_std(t))
        return a, logp, (inputs, t, std, eps, a)

    @torch.no_grad()
    def backward_cached(self, cache: tuple, grad_a: torch.Tensor, grad_logp: torch.Tensor) -> None:
        """Write into the parameters' `.grad` the gradient of `sum(grad_a * a) + sum(grad_logp *
        log pi)` for the draw `sample_cached` made (eps fixed: the reparameterization), through
        the squash (da/du = 1 - a^2, d log pi/du = 2a), the log-std map and the MLP."""
        inputs, t, std, eps, a = cache
        g_u = grad_a * (1 - a * a) + grad_logp[:, None] * (2 * a)
        g_log_std = g_u * std * eps - grad_logp[:, None]
        g = torch.cat([g_u, g_log_std * (0.5 * (LOG_STD_MAX - LOG_STD_MIN)) * (1 - t * t)], dim=-1)
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i in range(len(linears) - 1, -1, -1):
            lin, inp = linears[i], inputs[i]
            grad_w, grad_b = grad_buffers((lin.weight, lin.bias))
            torch.mm(g.t(), inp, out=grad_w)
            torch.sum(g, 0, out=grad_b)
            if i:
                g = torch.ops.aten.threshold_backward(torch.mm(g, lin.weight), inp, 0)


class BoxScaler:
    """The env's Box action bounds <-> [-1, 1]."""

    def __init__(self, action_space: gym.spaces.Box, device: torch.device):
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=device)

    def to_unit(self, action: torch.Tensor) -> torch.Tensor:
        return (2 * (action - self.low) / (self.high - self.low) - 1).clamp(-1, 1)

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        return self.low + (action + 1) * (self.high - self.low) / 2


def flat_obs(obs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """[B, obs_dim] float32 observations on `device`."""
    return obs.to(device, torch.float32).flatten(1)


def transitions(batch: TensorDict, device: torch.device, scale: BoxScaler) -> tuple[torch.Tensor, ...]:
    """(obs, action in [-1, 1], reward [B], next_obs, terminated [B]) of a replay batch on `device`
    (the rows SAC's and TD3's updates read)."""
    action = scale.to_unit(batch["action"].to(device, torch.float32))
    return (flat_obs(batch["obs"], device), action, batch["reward"].to(device, torch.float32).reshape(-1),
            flat_obs(batch["next_obs"], device), batch["terminated"].to(device).reshape(-1))


def q_regression_step(q: EnsembleQ, opt: torch.optim.Optimizer, obs: torch.Tensor, action: torch.Tensor,
                      target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of the critics on sum_i mean_b (Q_i(s, a) - target)^2 with the gradient
    in closed form: 2 (Q - target) / B pushed through the cached forward by
    `EnsembleQ.backward_cached` straight into `.grad` (no autograd graph, no zero_grad, no
    allocation after the first step; the same step as autograd's, tested). Needs
    `q.closed_form_backward`. Returns (loss, Q [n, B]), detached."""
    out, cache = q.forward_cached(torch.cat([obs, action], dim=-1))  # [n, B, 1]
    diff = out.squeeze(-1) - target  # [n, B]
    q.backward_cached(cache, diff.mul(2.0 / diff.shape[1]).unsqueeze(-1), out=grad_buffers(q.parameters()))
    optimizer_step(opt, None)
    return diff.pow(2).mean(1).sum(), out.squeeze(-1)


def closed_form(learner, loss: str, base: type) -> bool:
    """Whether `learner` may take its critics' gradients in closed form for the loss method
    `loss`: `learner.closed_form` is on, its twin critics allow it, and `loss` is `base`'s own
    (a loss overridden on the instance or in a subclass is honoured through autograd)."""
    return learner.closed_form and learner.q.closed_form_backward and not overridden(learner, loss, base)


def q_action_grad(q: EnsembleQ, obs: torch.Tensor, action: torch.Tensor,
                  member: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q(s, a) [B], dQ/da [B, act_dim]) of the frozen critics, without autograd (where
    `closed_form_backward`): Q is min over the members (SAC's clipped double Q; on a tie the first,
    as `min`'s backward picks), each member's gradient taken only on the rows where it is the min
    (`EnsembleMLP.member_input_grad_cached`), or member `member` alone (TD3: only its forward
    runs). An actor's loss -mean Q(s, pi(s)) then backpropagates as the surrogate
    `-(pi(s) * dQ/da).sum() / B` through the actor only."""
    x, cols = torch.cat([obs, action.detach()], dim=-1), slice(obs.shape[-1], None)
    if member is not None:
        out, cache = q.forward_cached(x, member)
        return out[:, 0], q.member_input_grad_cached(cache, member, cols=cols)
    out, cache = q.forward_cached(x)
    best = out.squeeze(-1).min(0)
    grad = torch.empty_like(action)
    for i in range(q.n):
        rows = (best.indices == i).nonzero().squeeze(1)
        if rows.numel():
            grad.index_copy_(0, rows, q.member_input_grad_cached(cache, i, rows, cols))
    return best.values, grad


def check_spaces(name: str, observation_space: gym.Space, action_space: gym.Space) -> tuple[int, int]:
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(f"{name} needs a Box observation space, got {observation_space}; flatten it with a wrapper")
    if not isinstance(action_space, gym.spaces.Box):
        raise ValueError(f"{name} needs a continuous (Box) action space, got {action_space}")
    return int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))


class SAC(Saveable):
    """`SAC(SACConfig(), obs_space, act_space)`; `act(obs)` samples env-scale actions
    (`deterministic=True`: tanh of the mean); `update(batch)` is one critic step (+ actor and
    temperature steps on the policy schedule) on `obs, action, reward, next_obs, terminated`."""

    def __init__(self, cfg: SACConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: str | torch.device = "cpu"):
        obs_dim, act_dim = check_spaces("sac", observation_space, action_space)
        if cfg.policy_frequency < 1:
            raise ValueError(f"algo.policy_frequency={cfg.policy_frequency} must be >= 1")
        self.cfg, self.device = cfg, torch.device(device)
        self.scale = BoxScaler(action_space, self.device)
        self.actor = SquashedGaussianActor(obs_dim, act_dim, cfg.hidden)
        self.q = EnsembleQ(obs_dim, act_dim, 2, hidden=cfg.hidden, act="relu", orthogonal=False)
        self.modules = nn.ModuleDict({"actor": self.actor, "q": self.q}).to(self.device)
        self.log_alpha = nn.Parameter(torch.tensor(0.0 if cfg.autotune else math.log(cfg.alpha), device=self.device))
        self.q_target = frozen_copy(self.q)
        self.q_params = list(self.q.parameters())
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.policy_lr)
        self.q_opt = make_optimizer(self.q_params, cfg.q_lr)
        self.alpha_opt = make_optimizer([self.log_alpha], cfg.q_lr)
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.steps = 0
        # the critics' gradients in closed form (`closed_form`; False: autograd, the same steps)
        self.closed_form = True

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        x = flat_obs(obs, self.device)
        a = self.actor.mode(x) if deterministic else self.actor.sample_nograd(x)[0]
        return TensorDict({"action": self.scale.to_env(a)}, batch_size=[x.shape[0]])

    # ---------------------------------------------------------------- losses
    def critic_loss(self, obs, action, reward, next_obs, terminated, alpha) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the twins of the batch MSE to the soft target; returns (loss, Q [2, B])."""
        target = self.soft_target(reward, next_obs, terminated, alpha)
        q = self.q(obs, action)  # [2, B]
        return (q - target).pow(2).mean(1).sum(), q

    def actor_loss(self, obs, alpha) -> tuple[torch.Tensor, torch.Tensor]:
        """E[ alpha log pi(a|s) - min_i Q_i(s, a) ], a ~ pi (reparameterized); returns (loss, log pi)."""
        a, logp = self.actor.sample(obs)
        return (alpha * logp - self.q(obs, a).min(0).values).mean(), logp

    def alpha_loss(self, logp: torch.Tensor) -> torch.Tensor:
        """E[ -log(alpha) (log pi + target_entropy) ]: alpha grows when the entropy -log pi is
        below the target and shrinks above it."""
        return -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()

    # ---------------------------------------------------------------- learning
    def soft_target(self, reward, next_obs, terminated, alpha) -> torch.Tensor:
        """r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s') [B]."""
        with torch.no_grad():
            next_a, next_logp = self.actor.sample_nograd(next_obs)
            next_v = self.q_target(next_obs, next_a).min(0).values - alpha * next_logp
            return soft_q_target(reward, terminated, next_v, self.cfg.gamma)

    def _actor_step(self, obs, alpha) -> tuple[torch.Tensor, torch.Tensor]:
        """One actor step on `actor_loss`; where the critics allow it, their part of the gradient
        (dQ/da) is closed-form and autograd runs through the actor only. Returns (loss, log pi)."""
        if not closed_form(self, "actor_loss", SAC):
            self.q.requires_grad_(False)  # the actor's gradient flows through Q's input, not into its weights
            try:
                a_loss, logp = self.actor_loss(obs, alpha)
                optimizer_step(self.actor_opt, a_loss)
            finally:
                self.q.requires_grad_(True)
            return a_loss.detach(), logp
        n = obs.shape[0]
        if not self.actor.closed_form_backward:
            a, logp = self.actor.sample(obs)
            q_min, dq_da = q_action_grad(self.q, obs, a)
            optimizer_step(self.actor_opt, (alpha * logp).mean() - (a * dq_da).sum() / n)
            return (alpha * logp.detach() - q_min).mean(), logp
        a, logp, cache = self.actor.sample_cached(obs)  # the whole gradient in closed form
        q_min, dq_da = q_action_grad(self.q, obs, a)
        self.actor.backward_cached(cache, dq_da.mul_(-1.0 / n), (alpha / n).expand(n))
        optimizer_step(self.actor_opt, None)
        return (alpha * logp - q_min).mean(), logp

    def _alpha_step(self, logp: torch.Tensor) -> None:
        """One temperature step on `alpha_loss`: its gradient -(mean log pi + target_entropy) in
        closed form (one scalar, no autograd graph) unless `closed_form` is off or `alpha_loss` is
        overridden."""
        if self.closed_form and not overridden(self, "alpha_loss", SAC):
            grad = grad_buffers([self.log_alpha])[0]
            torch.mean(logp.detach(), 0, out=grad).add_(self.target_entropy).neg_()
            optimizer_step(self.alpha_opt, None)
        else:
            optimizer_step(self.alpha_opt, self.alpha_loss(logp))

    def update(self, batch: TensorDict) -> dict[str, float]:
        cfg = self.cfg
        obs, action, reward, next_obs, terminated = transitions(batch, self.device, self.scale)
        alpha = self.log_alpha.detach().exp()
        if closed_form(self, "critic_loss", SAC):
            target = self.soft_target(reward, next_obs, terminated, alpha)
            q_loss, q = q_regression_step(self.q, self.q_opt, obs, action, target)
        else:
            q_loss, q = self.critic_loss(obs, action, reward, next_obs, terminated, alpha)
            optimizer_step(self.q_opt, q_loss)
            q_loss, q = q_loss.detach(), q.detach()
        info = {"loss/q": q_loss, "train/q_mean": q.mean(), "train/alpha": alpha}
        self.steps += 1
        if self.steps % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                a_loss, logp = self._actor_step(obs, alpha)
                if cfg.autotune:
                    self._alpha_step(logp)
                    alpha = self.log_alpha.detach().exp()
            info.update({"loss/actor": a_loss, "train/entropy": -logp.detach().mean()})
        soft_update(self.q_target, self.q, cfg.tau)
        return host_metrics(info)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"modules": self.modules.state_dict(), "q_target": self.q_target.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "actor_opt": self.actor_opt.state_dict(),
                "q_opt": self.q_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        legacy_ensemble_error(state["modules"])
        self.modules.load_state_dict(state["modules"])
        self.q_target.load_state_dict(state["q_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.q_opt.load_state_dict(state["q_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.steps = state["steps"]


# -------------------------------------------------------------------------- entry point


def train_off_policy(ctx, learner_cls) -> dict:
    """`python -m rlx.train algo=sac|td3 env=<gym id>`: vector env -> OffPolicyLoop, deterministic
    evaluation in a fresh env (seeds seed+10000...)."""
    from rlx.core.loops import evaluate_policy
    from rlx.core.offpolicy import OffPolicyLoop
    from rlx.envs.registry import make_env, make_vec_env

    cfg = ctx.cfg
    envs = make_vec_env(cfg.env)
    learner = learner_cls(cfg.algo, envs.single_observation_space, envs.single_action_space, device=ctx.device)

    def evaluate() -> dict[str, float]:
        return evaluate_policy(lambda obs: learner.act(obs, deterministic=True)["action"],
                               partial(make_env, cfg.env, check=False), cfg.trainer.eval_episodes, seed=cfg.seed + 10_000)

    a = cfg.algo
    loop = OffPolicyLoop(learner, envs, cfg.trainer, a.buffer_size, a.batch_size, a.learning_starts, a.utd,
                         a.steps_per_iteration, ctx.logger, evaluate, cfg.seed)
    try:
        return ctx.run(loop)
    finally:
        envs.close()


def check_off_policy(cfg) -> None:
    """Before the run directory is made: the env's spaces suit a continuous-action learner."""
    from rlx.envs.registry import make_env

    env = make_env(cfg.env)
    try:
        check_spaces(cfg.algorithm, env.observation_space, env.action_space)
    finally:
        env.close()


@register("sac", SACConfig, "Soft Actor-Critic (automatic entropy tuning, twin Q): continuous actions, off-policy",
          default_env="pendulum", check=check_off_policy)
def train(ctx) -> dict:
    return train_off_policy(ctx, SAC)
