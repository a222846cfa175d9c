"""Hilbert foundation policies (HILP; Park, Kreiman, Levine, ICML 2024, arXiv:2402.15567).

1. Hilbert representation (paper sec. "Hilbert representations"): phi: S -> R^d with the goal-conditioned value
   V(s, g) = -||phi(s) - phi(g)||, trained with the IQL-style expectile objective: E[ L2_tau( r(s, g) + gamma Vbar(s', g) - V(s, g) ) ], r = 0 if s = g else -1
   (the episode ends at the goal), Vbar a Polyak target. As in the official code, two phi
   networks (V1, V2) are trained on targets from min(Vbar1, Vbar2) and the asymmetric weight
   follows the target advantage r + gamma min Vbar(s') - mean Vbar(s).
2. Latent-conditioned policy (paper sec. "Hilbert foundation policies"): pi(a | s, z), z ~ Uniform(unit sphere) fresh for
   every batch, trained offline by rlx's IQL + AWR (or DDPG+BC) (`OfflineActorCritic` on
   (s, z)) on the intrinsic reward r(s, z, s') = <phi(s') - phi(s), z>.
3. Prompting (paper sec. "Zero-shot policy prompting"): goals, z = (phi(g) - phi(s)) / ||.||
   recomputed at every step, optionally through the minimax midpoint subgoal (`plan_recursions`,
   test-time planning); rewards, z = the least-squares
   solution of r ~ <f, z> + c on N labelled samples (the constant c is dropped: it does not change
   the best behaviour of a task without termination), normalized.

Features f (`algo.feature`): `diff`, f = phi(s') - phi(s), the paper's intrinsic reward and the
official goal-conditioned code; `state`, f = phi(s') - mean phi, what the official zero-shot code
uses for both the intrinsic reward and reward inference (hilp_zsrl `SFAgentConfig.feature_type =
'state'`, phi centred by a running mean with rate 0.005). `auto` (default) picks `diff` for
goal reaching and `state` for zero-shot rewards: a reward that depends on the state itself (a
velocity in the observation) is linear in phi(s') far more often than in a phi difference.

`algo=hilp` trains on a maze dataset (goal-reaching evaluation) or on a locomotion dataset
(zero-shot evaluation on `algo.reward_tasks`, rlx.envs.state_rewards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx.algos.gcrl import check_goal_mix, train_goal_conditioned
from rlx.algos.offline_ac import ActorCriticConfig, OfflineActorCritic, expectile_loss
from rlx.algos.registry import register
from rlx.core.checkpoint import Saveable
from rlx.core.learner import frozen_copy, make_optimizer, optimizer_step, soft_update
from rlx.core.nets import EnsembleMLP, legacy_ensemble_error
from rlx.core.ranges import bounded, count, each, nonneg, positive, unit

__all__ = ["HILP", "HILPConfig", "infer_latent", "reward_fit_r2", "unit_sphere", "PhiNetwork"]

PHI_KINDS = ("hilbert", "random")
FEATURES = ("auto", "diff", "state")
PHI_MEAN_RATE = 0.005  # running-mean rate of phi for the `state` features (official hilp_zsrl HILP.forward)
EXTRACTIONS = ("awr", "ddpg_bc")


@dataclass
class HILPConfig:
    """HILP hyperparameters; defaults are the paper's goal-conditioned settings (official code
    hilp_gcrl, `create_learner` and `main.py`, which follow HIQL)."""

    phi: str = "hilbert"  # hilbert: learn phi (HILP) | random: a fixed random phi network (the representation baseline)
    latent_dim: int = count(32)  # d, dimension of phi and z ("skill_dim" 32, HILP paper app. / create_learner)
    expectile: float = bounded(0.95, 0, 1, "()")  # tau of the phi value objective (create_learner expectile=0.95)
    discount: float = bounded(0.99, 0, 1, "(]")  # gamma of the phi value objective (create_learner discount=0.99)
    tau: float = bounded(0.005, 0, 1, "(]")  # Polyak rate of the phi and skill-critic targets (create_learner tau=0.005)
    lr: float = positive(3e-4)  # Adam learning rate of every network (create_learner lr=3e-4)
    hidden: list[int] = each(lambda: [512, 512, 512], 1)  # value/actor hidden dims (create_learner)
    layer_norm: bool = True  # LayerNorm in phi and the critics (create_learner use_layer_norm=1)
    batch_size: int = count(1024)  # batch size (HIQL/HILP main.py)
    p_curgoal: float = unit(0.0)  # phi goals: the current state (HILP main.py p_currgoal=0: V(s, s) = 0 by construction, so such rows carry no gradient)
    p_trajgoal: float = unit(0.625)  # phi goals: a future state of the same trajectory (HILP main.py p_trajgoal)
    p_randomgoal: float = unit(0.375)  # phi goals: a random dataset state (HILP main.py p_randomgoal)
    goal_discount: float = bounded(0.99, 0, 1, "[)")  # geometric future offset P(k) ~ goal_discount^(k-1) (main.py geom_sample, = discount)
    skill_expectile: float = bounded(0.9, 0, 1, "()")  # IQL expectile of the latent-conditioned critic (create_learner skill_expectile)
    skill_temperature: float = nonneg(10.0)  # AWR inverse temperature (create_learner skill_temperature)
    skill_discount: float = bounded(0.99, 0, 1, "(]")  # discount of the intrinsic-reward problem (create_learner skill_discount)
    extraction: str = "awr"  # policy extraction: awr (paper) | ddpg_bc
    feature: str = "auto"  # intrinsic reward / reward-inference features: diff (phi(s')-phi(s)) | state (phi(s')-mean) | auto (module docstring)
    bc_alpha: float = nonneg(0.4)  # ddpg_bc: weight of the BC term (rlx's DDPG+BC default)
    plan_recursions: int = nonneg(0)  # goal prompting through midpoint subgoals, this many halvings (0: direct; HILP-Plan uses 3)
    plan_candidates: int = count(50_000)  # dataset states considered as subgoals (main.py planning_num_states; capped at the dataset)
    plan_knns: int = count(50)  # the subgoal is the mean phi of this many best minimax candidates (main.py planning_num_knns)
    reward_tasks: list[str] = field(default_factory=lambda: ["forward", "backward", "jump"])  # zero-shot tasks
    reward_samples: int = count(10_000)  # N reward-labelled dataset samples for the zero-shot regression


def unit_sphere(n: int, dim: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """[n, dim] latents uniform on the unit sphere (normalized Gaussians)."""
    z = torch.randn(n, dim, generator=generator).to(device)
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _reward_fit(features: torch.Tensor, rewards: torch.Tensor, intercept: bool = True):
    """Least squares r ~ <f, w> + c in float64: (w, mean f, mean r); without intercept the means are 0."""
    f, r = features.double(), rewards.double().to(features.device)
    f_mean = f.mean(0) if intercept else torch.zeros_like(f[0])
    r_mean = r.mean() if intercept else torch.zeros_like(r[0])
    w = torch.linalg.lstsq(f - f_mean, (r - r_mean).unsqueeze(-1)).solution.squeeze(-1)
    return w, f_mean, r_mean


def infer_latent(features: torch.Tensor, rewards: torch.Tensor, intercept: bool = True) -> torch.Tensor:
    """HILP zero-shot prompting: z* = argmin_z min_c E[(r - <f, z> - c)^2] on features f [N, d] and rewards
    [N], by least squares, normalized to the unit sphere. With `intercept` (default) both sides are
    centred, so a constant part of the reward (e.g. a torso height that is never near 0) does not
    bend z; `intercept=False` is the paper's plain regression."""
    w = _reward_fit(features, rewards, intercept)[0]
    return (w / w.norm().clamp_min(1e-12)).to(features.dtype)


def reward_fit_r2(features: torch.Tensor, rewards: torch.Tensor, held_features: torch.Tensor,
                  held_rewards: torch.Tensor) -> float:
    """Held-out R^2 of the fit `infer_latent` prompts with: how much of a reward the features can
    express at all (1: all of it, <= 0: nothing); a prompt cannot do better than its fit."""
    w, f_mean, r_mean = _reward_fit(features, rewards)
    rh = held_rewards.double().to(features.device)
    pred = r_mean + (held_features.double() - f_mean) @ w
    return float(1.0 - (rh - pred).pow(2).mean() / (rh - rh.mean()).pow(2).mean().clamp_min(1e-12))


class PhiNetwork(EnsembleMLP):
    """An ensemble of phi MLPs, one batched network: [B, obs_dim] -> [E, B, d];
    V_e(s, g) = -||phi_e(s) - phi_e(g)||."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: list[int], layer_norm: bool, ensemble: int = 2):
        super().__init__(obs_dim, latent_dim, ensemble, legacy="nets", hidden=hidden, act="gelu", layer_norm=layer_norm)

    def value(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """[E, B] V(s, g) = -||phi(s) - phi(g)|| (the sqrt is kept off 0 for finite gradients)."""
        diff = self(obs) - self(goal)
        return -diff.pow(2).sum(-1).clamp_min(1e-6).sqrt()


class HILP(Saveable):
    """`HILP(HILPConfig(), obs_space, act_space)`; `update(batch)` takes rows with `obs, action,
    next_obs, goal` and the goal reward/termination of `rlx.algos.gcrl.goal_batch`;
    `act(obs, goal=...)` or `act(obs, z=...)`; `infer_z(obs, next_obs, reward)` for a reward."""

    def __init__(self, cfg: HILPConfig, observation_space: gym.Space, action_space: gym.Space,
                 total_steps: int | None = None, device: str | torch.device = "cpu", auto_feature: str = "diff"):
        self.check_config(cfg)
        self.cfg, self.device = cfg, torch.device(device)
        obs_dim = int(np.prod(observation_space.shape))
        self.phi = PhiNetwork(obs_dim, cfg.latent_dim, cfg.hidden, cfg.layer_norm).to(self.device)
        self.phi.register_buffer("obs_mean", torch.zeros(obs_dim, device=self.device))
        self.phi.register_buffer("obs_std", torch.ones(obs_dim, device=self.device))
        self.phi.register_buffer("phi_mean", torch.zeros(cfg.latent_dim, device=self.device))
        self.feature = auto_feature if cfg.feature == "auto" else cfg.feature  # zero-shot passes auto_feature="state"
        self.phi_target = frozen_copy(self.phi)
        self.phi_opt = make_optimizer(self.phi.parameters(), cfg.lr)
        # the skill policy is an offline actor-critic on (s, z): its config from HILP's skill fields
        policy_cfg = ActorCriticConfig(value="iql", extraction=cfg.extraction, expectile=cfg.skill_expectile,
                                       awr_alpha=cfg.skill_temperature, bc_alpha=cfg.bc_alpha, gamma=cfg.skill_discount,
                                       tau=cfg.tau, actor_lr=cfg.lr, critic_lr=cfg.lr, actor_cosine_decay=False,
                                       hidden=list(cfg.hidden), layer_norm=cfg.layer_norm, batch_size=cfg.batch_size)
        latent_obs = gym.spaces.Box(-np.inf, np.inf, (obs_dim + cfg.latent_dim,), np.float32)
        self.policy = OfflineActorCritic(policy_cfg, latent_obs, action_space, total_steps, device)
        self.candidates: torch.Tensor | None = None  # dataset states for midpoint planning
        self._cand_phi: torch.Tensor | None = None  # their phi (planning cache)

    # ---------------------------------------------------------------- representation
    def set_dataset_stats(self, obs: torch.Tensor) -> None:
        """Observation normalizer for phi and the policy, and the planning candidates."""
        obs = obs.to(self.device, torch.float32).flatten(1)
        self.phi.obs_mean.copy_(obs.mean(0))
        self.phi.obs_std.copy_(obs.std(0).clamp_min(1e-3))
        with torch.no_grad():
            self.phi.phi_mean.copy_(self.embed(obs[torch.randperm(len(obs))[:4096].to(obs.device)]).mean(0))
        self.phi_target.load_state_dict(self.phi.state_dict())
        z = unit_sphere(len(obs), self.cfg.latent_dim, device=self.device)
        self.policy.set_dataset_stats(torch.cat([obs, z], 1))
        pick = torch.randperm(len(obs))[: self.cfg.plan_candidates]
        self.candidates = obs[pick.to(obs.device)]
        self._cand_phi = None

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.to(self.device, torch.float32).flatten(1) - self.phi.obs_mean) / self.phi.obs_std

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """phi(s) [B, d] (the first ensemble member, as the official code's `phi`)."""
        return self.phi(self._norm(obs), member=0)

    def value(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """[E, B] V(s, g) = -||phi(s) - phi(g)|| for raw observations."""
        return self.phi.value(self._norm(obs), self._norm(goal))

    def phi_loss(self, obs, next_obs, goal, reward, terminated) -> tuple[torch.Tensor, dict]:
        """The expectile value objective with the official code's double-V details (module docstring). Inputs normalized."""
        cfg = self.cfg
        with torch.no_grad():
            next_v = self.phi_target.value(next_obs, goal)  # [2, B]
            mask = 1.0 - terminated.float()
            adv = reward + cfg.discount * mask * next_v.min(0).values - self.phi_target.value(obs, goal).mean(0)
            targets = reward + cfg.discount * mask * next_v  # [2, B], one per ensemble member
        v = self.phi.value(obs, goal)  # [2, B]
        loss = sum(expectile_loss(targets[e] - v[e], cfg.expectile, sign=adv) for e in range(v.shape[0]))
        return loss, {"loss/phi": loss.detach(), "train/phi_v_mean": v.mean().detach(),
                      "train/phi_adv_mean": adv.mean()}

    def features(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """[B, d] the transition features f(s, s'): phi(s') - phi(s) (`diff`) or phi(s') - mean phi (`state`)."""
        if self.feature == "state":
            return self.embed(next_obs) - self.phi.phi_mean
        return self.embed(next_obs) - self.embed(obs)

    @staticmethod
    def check_config(cfg: HILPConfig) -> None:
        """One-line errors (ValueError) for switch values and ranges that cannot work."""
        if cfg.phi not in PHI_KINDS:
            raise ValueError(f"unknown algo.phi={cfg.phi!r}; choose one of {', '.join(PHI_KINDS)}")
        if cfg.feature not in FEATURES:
            raise ValueError(f"unknown algo.feature={cfg.feature!r}; choose one of {', '.join(FEATURES)}")
        if cfg.extraction not in EXTRACTIONS:
            raise ValueError(f"unknown algo.extraction={cfg.extraction!r}; choose one of {', '.join(EXTRACTIONS)}")
        if cfg.latent_dim < 1 or not 0.5 <= cfg.expectile < 1.0:
            raise ValueError(f"algo.latent_dim={cfg.latent_dim} must be >= 1 and algo.expectile={cfg.expectile} in "
                             "[0.5, 1); the paper uses latent_dim=32, expectile=0.95")
        check_goal_mix(cfg.p_curgoal, cfg.p_trajgoal, cfg.p_randomgoal)

    def intrinsic_reward(self, obs: torch.Tensor, next_obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[B] r(s, z, s') = <f(s, s'), z>, the intrinsic reward."""
        return (self.features(obs, next_obs) * z).sum(-1)

    # ---------------------------------------------------------------- learning
    def update(self, batch: TensorDict) -> dict[str, float]:
        cfg = self.cfg
        info: dict[str, float] = {}
        if cfg.phi == "hilbert":
            loss, phi_info = self.phi_loss(self._norm(batch["obs"]), self._norm(batch["next_obs"]),
                                           self._norm(batch["goal"]), batch["reward"].to(self.device).float(),
                                           batch["terminated"].to(self.device))
            optimizer_step(self.phi_opt, loss)
            self._cand_phi = None
            soft_update(self.phi_target, self.phi, cfg.tau)
            info.update({k: float(v) for k, v in phi_info.items()})
        n = batch.shape[0]
        with torch.no_grad():
            z = unit_sphere(n, cfg.latent_dim, device=self.device)  # fresh skills for every batch
            reward = self.intrinsic_reward(batch["obs"], batch["next_obs"], z)
            if self.feature == "state" and cfg.phi == "hilbert":  # follow phi as it moves (official running mean)
                self.phi.phi_mean.lerp_(self.embed(batch["obs"]).mean(0), PHI_MEAN_RATE)
        skill_batch = TensorDict({
            "obs": torch.cat([batch["obs"].to(self.device).float(), z], -1),
            "next_obs": torch.cat([batch["next_obs"].to(self.device).float(), z], -1),
            "action": batch["action"], "reward": reward,
            "terminated": torch.zeros(n, dtype=torch.bool, device=self.device)}, batch_size=[n])  # no 'done' (official code)
        info.update(self.policy.update(skill_batch))
        info["train/intrinsic_reward_mean"] = float(reward.mean())
        return info

    # ---------------------------------------------------------------- prompting
    @torch.no_grad()
    def subgoal(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Midpoint planning (official `goal_skill_planning`): `plan_recursions` times, replace phi(g)
        by the mean phi of the `plan_knns` candidates w with the smallest max(||phi(s) - phi(w)||,
        ||phi(w) - phi(g)||) (the phi-space minimax midpoint). Returns the subgoal's phi [B, d]."""
        phi_s, phi_g = self.embed(obs), self.embed(goal)
        if self._cand_phi is None:  # phi of the candidates, cached until phi or the candidates change
            self._cand_phi = self.embed(self.candidates)
        phi_c = self._cand_phi  # [C, d]
        k = min(self.cfg.plan_knns, len(phi_c))
        for _ in range(self.cfg.plan_recursions):
            minimax = torch.maximum(torch.cdist(phi_s, phi_c), torch.cdist(phi_g, phi_c))  # [B, C]
            phi_g = phi_c[minimax.topk(k, dim=1, largest=False).indices].mean(1)  # [B, k, d] -> [B, d]
        return phi_g

    @torch.no_grad()
    def goal_latent(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Goal prompting: z = (phi(g) - phi(s)) / ||phi(g) - phi(s)|| (through a subgoal when planning)."""
        phi_g = self.subgoal(obs, goal) if self.cfg.plan_recursions > 0 else self.embed(goal)
        d = phi_g - self.embed(obs)
        return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def infer_z(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """Zero-shot prompt for a reward from labelled transitions: [d]."""
        return infer_latent(self.features(obs, next_obs), reward.to(self.device).float())

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, goal: torch.Tensor | None = None,
            z: torch.Tensor | None = None) -> TensorDict:
        if z is None:
            if goal is None:
                raise ValueError("HILP.act needs a goal or a latent z")
            z = self.goal_latent(obs, goal)
        z = z.to(self.device).float().expand(obs.shape[0], -1)
        return self.policy.act(torch.cat([obs.to(self.device).float(), z], -1), deterministic)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"phi": self.phi.state_dict(), "phi_target": self.phi_target.state_dict(),
                "phi_opt": self.phi_opt.state_dict(), "policy": self.policy.state_dict(), "candidates": self.candidates}

    def load_state_dict(self, state: dict) -> None:
        for key in ("phi", "phi_target"):  # checkpoints from before `algo.feature` have no phi_mean
            state[key].setdefault("phi_mean", torch.zeros_like(self.phi.phi_mean))
        legacy_ensemble_error(state["phi"], "nets")
        self.phi.load_state_dict(state["phi"])
        self.phi_target.load_state_dict(state["phi_target"])
        self.phi_opt.load_state_dict(state["phi_opt"])
        self.policy.load_state_dict(state["policy"])
        self.candidates = state["candidates"]
        self._cand_phi = None


# -------------------------------------------------------------------------- entry point


def check(cfg) -> None:
    """`algo=hilp` before any work: a dataset is named, the switches fit."""
    from rlx.core.errors import ConfigError

    if not cfg.env.dataset:
        raise ConfigError("algo=hilp is offline: name a dataset with "
                          "env=pointmaze-medium|pointmaze-large|cheetah-explore")
    HILP.check_config(cfg.algo)


def train_hilp(ctx) -> dict:
    """`python -m rlx.train algo=hilp env=pointmaze-medium` (goal reaching) or
    `env=cheetah-explore` (zero-shot rewards `algo.reward_tasks`)."""
    from rlx.envs.datasets import load_dataset

    cfg = ctx.cfg
    if "maze" in load_dataset(cfg.env.dataset).metadata:
        return train_goal_conditioned(ctx, make_learner=HILP)
    from rlx.algos.hilp_zeroshot import train_zero_shot

    return train_zero_shot(ctx)


register("hilp", HILPConfig, "Hilbert foundation policies: phi with V=-||phi(s)-phi(g)||, latent policy, "
         "goal and zero-shot reward prompting (offline)", default_env="pointmaze-medium", check=check)(train_hilp)
