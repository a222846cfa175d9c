"""Test-time policy improvement for offline actor-critics (Park, Frans, Levine, Kumar 2024,
"Is Value Learning Really the Main Bottleneck in Offline RL?", the test-time policy
improvement section): the learned critic keeps improving the policy on the states the
agent actually visits at evaluation, which the dataset may not cover.

* OPEX (on-the-fly policy extraction): each evaluation action takes one step along the
  critic's action gradient, a = clip(mu(s) + beta * grad_a Q(s, a)|_{a = mu(s)}, -1, 1),
  with Q the mean of the twin critics, in the learner's [-1, 1] action units.
* TTT (test-time training): a copy of the policy keeps training during evaluation on the
  states visited so far, with the frozen critic and a penalty to the offline policy mu_0:
  min_theta E_{s ~ visited}[ -Q(s, mu_theta(s)) / stopgrad(E|Q|) + alpha ||mu_theta(s) - mu_0(s)||^2 ]
  (the DDPG+BC form with the offline policy's action as the anchor). Each evaluation call
  starts again from the offline policy, so training and checkpoints are unaffected.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import gymnasium as gym
import torch

from rlx.core.learner import make_optimizer, optimizer_step
from rlx.core.loops import evaluate_policy

__all__ = ["opex_action", "TTTAdaptation", "evaluate_offline"]


def opex_action(actor: Callable[[torch.Tensor], torch.Tensor], q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                obs: torch.Tensor, beta: float) -> torch.Tensor:
    """OPEX: mu(s) + beta * grad_a Q(s, mu(s)), clipped to [-1, 1]. `obs` is what the actor and
    critic take (normalized); actions are in [-1, 1]."""
    with torch.enable_grad():
        a = actor(obs).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(q(obs, a).sum(), a)  # per-sample gradients: Q(s_i, .) depends on a_i only
    return (a + beta * grad).clamp(-1.0, 1.0).detach()


class TTTAdaptation:
    """TTT: a copy of `learner.actor` updated on visited states; `act(obs_n)` stores the states,
    takes an update every `every` calls, and returns the adapted policy's [-1, 1] action."""

    def __init__(self, learner, lr: float, alpha: float, batch: int, every: int, seed: int = 0):
        self.learner, self.alpha, self.batch, self.every = learner, alpha, batch, every
        self.actor = copy.deepcopy(learner.actor)
        self.anchor = learner.actor
        self.opt = make_optimizer(self.actor.parameters(), lr)
        self.states: list[torch.Tensor] = []
        self.calls = 0
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, obs: torch.Tensor) -> torch.Tensor:
        mu = self.actor(obs)
        with torch.no_grad():
            mu0 = self.anchor(obs)
        q = self.learner.q_value(obs, mu)
        return -(q / q.abs().mean().detach().clamp_min(1e-6)).mean() + self.alpha * (mu - mu0).pow(2).sum(-1).mean()

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        self.states.append(obs)
        self.calls += 1
        if self.calls % self.every == 0:
            pool = torch.cat(self.states)  # [visited, obs_dim]
            idx = torch.randint(pool.shape[0], (self.batch,), generator=self.generator)
            with torch.enable_grad():
                optimizer_step(self.opt, self.loss(pool[idx]))
        with torch.no_grad():
            return self.actor(obs)


def evaluate_offline(learner, env_fn: Callable[[], gym.Env], episodes: int, seed: int, mode: str = "none",
                     num_envs: int | None = None) -> dict[str, float]:
    """Deterministic evaluation of an `OfflineActorCritic` with test-time improvement `mode`
    (none | opex | ttt); metrics `eval/return_mean|std`, `eval/length_mean`."""
    cfg = learner.cfg
    if mode != "none" and not hasattr(learner, "q"):
        raise ValueError(f"test_time={mode} needs a critic; algo.value=none has none")
    if mode == "none":
        policy = lambda obs: learner.act(obs, deterministic=True)["action"]  # noqa: E731
    elif mode == "opex":
        policy = lambda obs: learner.to_env(opex_action(learner.actor, learner.q_value, learner.norm_obs(obs),  # noqa: E731
                                                        cfg.opex_beta))
    elif mode == "ttt":
        ttt = TTTAdaptation(learner, cfg.ttt_lr, cfg.ttt_alpha, cfg.ttt_batch, cfg.ttt_every, seed)
        policy = lambda obs: learner.to_env(ttt.act(learner.norm_obs(obs)))  # noqa: E731
    else:
        raise ValueError(f"unknown test_time={mode!r}; choose none, opex or ttt")
    return evaluate_policy(policy, env_fn, episodes, seed=seed, num_envs=num_envs)
