"""CPPO: Continual Proximal Policy Optimization (Zhang et al., "CPPO: Continual Learning for
Reinforcement Learning with Human Feedback", ICLR 2024).

The objective (paper sec. 3, eq. 5-6) weights PPO's clipped term and a knowledge-retention
penalty sample by sample:

    L(theta) = E_x[ alpha(x) * L_clip(x) ] + c_kr * E_x[ beta(x) * L_kr(x) ]  (+ value, entropy)
    L_kr(x)  = mean_t ( log pi_theta(y_t | x, y_<t) - log pi_anchor(y_t | x, y_<t) )^2

with pi_anchor = pi_{t-1}, the policy that finished the previous task (`anchor=prev_task`, the
paper's), or the policy that sampled the rollout (`anchor=rollout`). Samples are sorted (paper
sec. 3.2.1, Table 1) by their reward r(x) and generation probability P(x) (mean token log-prob
under the sampling policy), against batch mean +/- k std:

    high-performance  r high, P high   alpha up,   beta up     (learn it and keep it)
    overfitting       r low,  P high   alpha up*,  beta down   (unlearn, do not retain)
    high-variance     r high, P low    alpha up,   beta down   (learn, nothing to retain yet)
    noisy             r low,  P low    alpha down, beta down   (likely label/reward noise)
    normal            otherwise        alpha = beta = 1

(*) configurable with `overfitting=learn|ignore`. How far a weight moves is set by one z-score:
`weighting=paper` (default) drives alpha (policy learning) by the generation-probability z-score
z_p and beta (knowledge retention) by the reward z-score z_r, as the paper's eq. 4 (learning set
= high P, retention set = high r) and its learnable objective E[alpha P + beta r] pair them;
`weighting=swapped` is the reverse (rlx's earlier mapping). Heuristic weights (`retention=
heuristic`): up(z) = clip(1 + |z| - k, 1, ub), down(z) = clip(1 - (|z| - k), lb, 1). Learned
weights (`retention=learned`): the per-batch coefficient problem of `learned_weights`.
Baselines on the same code path: `retention=none` (sequential PPO), `kl` (per-token KL penalty
to pi_{t-1} in the reward) and `l2` (L2 penalty to pi_{t-1}'s parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict

from rlx.algos.continual import check_stream, train_on_stream
from rlx.algos.registry import register
from rlx.algos.rlhf import RLHF, RLHFConfig, masked_mean
from rlx.core.ranges import nonneg, one_of, positive

__all__ = ["CPPO", "CPPOConfig", "Category", "classify_samples", "heuristic_weights", "learned_weights",
           "retention_loss", "weight_scores"]

RETENTIONS = ("none", "kl", "l2", "heuristic", "learned")
WEIGHTINGS = ("paper", "swapped")
ANCHORS = ("prev_task", "rollout")


class Category:
    """Sample categories of CPPO Table 1 (integer codes)."""

    NORMAL, HIGH_PERFORMANCE, OVERFITTING, HIGH_VARIANCE, NOISY = range(5)
    NAMES = ("normal", "high_performance", "overfitting", "high_variance", "noisy")


@dataclass
class CPPOConfig(RLHFConfig):
    """CPPO on top of PPO-RLHF; `retention` also selects the continual-learning baselines."""

    retention: str = "heuristic"  # none (sequential PPO) | kl | l2 (penalties to the previous-task policy) | heuristic | learned (CPPO)
    retention_coef: float = nonneg(0.1)  # c_kr for heuristic/learned; KL coefficient for kl; L2 coefficient for l2
    weighting: str = one_of("paper", ("paper", "swapped"))  # paper: alpha from the probability z-score, beta from the reward z-score | swapped: the reverse
    anchor: str = one_of("prev_task", ("prev_task", "rollout"))  # retention target of heuristic/learned: prev_task (pi_{t-1}, the paper's) | rollout (the sampling policy)
    k: float = nonneg(0.5)  # category threshold in batch standard deviations (mean +/- k std)
    lb: float = positive(0.5)  # lower bound of alpha and beta
    ub: float = positive(2.0)  # upper bound of alpha and beta
    overfitting: str = "learn"  # overfitting samples (low reward, high probability): learn (alpha up) | ignore (alpha down)
    learned_tau: float = positive(1.0)  # learned weights: strength of the keep-near-1 regulariser tau * ((alpha-1)^2 + (beta-1)^2)
    compare_ppo: bool = True  # also train sequential PPO (same stream, seed, budget) and print its figures beside


def zscores(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else torch.zeros_like(x)


def weight_scores(reward: torch.Tensor, gen_logp: torch.Tensor, weighting: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """(score of alpha, score of beta) [N]: (z_p, z_r) for `paper`, (z_r, z_p) for `swapped`."""
    zr, zp = zscores(reward.float()), zscores(gen_logp.float())
    return (zp, zr) if weighting == "paper" else (zr, zp)


def classify_samples(reward: torch.Tensor, gen_logp: torch.Tensor, k: float) -> torch.Tensor:
    """Category [N] of each sample from reward [N] and generation log-probability [N] (CPPO Table 1)."""
    zr, zp = zscores(reward.float()), zscores(gen_logp.float())
    hr, lr, hp, lp = zr > k, zr < -k, zp > k, zp < -k
    cat = torch.full_like(zr, Category.NORMAL, dtype=torch.long)
    cat[hr & hp] = Category.HIGH_PERFORMANCE
    cat[lr & hp] = Category.OVERFITTING
    cat[hr & lp] = Category.HIGH_VARIANCE
    cat[lr & lp] = Category.NOISY
    return cat


def _directions(overfitting: str) -> dict[int, tuple[int, int]]:
    """Table 1 per category: (sign of alpha - 1, sign of beta - 1)."""
    return {Category.HIGH_PERFORMANCE: (1, 1), Category.OVERFITTING: (1 if overfitting == "learn" else -1, -1),
            Category.HIGH_VARIANCE: (1, -1), Category.NOISY: (-1, -1)}


def heuristic_weights(reward: torch.Tensor, gen_logp: torch.Tensor, k: float, lb: float, ub: float,
                      overfitting: str = "learn", weighting: str = "paper") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha [N], beta [N], category [N]): the direction from Table 1, the size linear in the
    z-score of `weight_scores` beyond k, clipped to [lb, ub]; exactly 1 for normal samples (and
    continuous at the category boundaries)."""
    s_alpha, s_beta = weight_scores(reward, gen_logp, weighting)
    cat = classify_samples(reward, gen_logp, k)
    up = lambda z: (1 + z.abs() - k).clamp(1, ub)  # noqa: E731
    down = lambda z: (1 - (z.abs() - k)).clamp(lb, 1)  # noqa: E731
    alpha, beta = torch.ones_like(s_alpha), torch.ones_like(s_alpha)
    for c, (da, db) in _directions(overfitting).items():
        sel = cat == c
        alpha[sel] = (up if da > 0 else down)(s_alpha[sel])
        beta[sel] = (up if db > 0 else down)(s_beta[sel])
    return alpha, beta, cat


def learned_weights(reward: torch.Tensor, gen_logp: torch.Tensor, k: float, lb: float, ub: float, tau: float = 1.0,
                    overfitting: str = "learn", weighting: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample weights re-fitted on each batch (CPPO sec. 3.2.2, the learnable weights):

        max_{alpha, beta}  E[ alpha(x) s_alpha(x) + beta(x) s_beta(x) ] - tau E[ (alpha - 1)^2 + (beta - 1)^2 ]
        s.t. lb <= alpha, beta <= ub and Table 1's ordering on the four corner categories
             (e.g. high-performance: alpha >= 1, beta >= 1; noisy: alpha <= 1, beta <= 1)

    with (s_alpha, s_beta) = (z_p, z_r) under `weighting=paper` (the paper's E[alpha P + beta R]
    on batch z-scores). Normal samples carry no ordering constraint (the relaxation of the hard
    cut-off), only the keep-near-1 regulariser. The problem is separable, one concave quadratic
    per weight on an interval, so its maximiser is exact and closed-form: the unconstrained
    optimum 1 + s / (2 tau) clipped to the feasible interval (the paper solves the same problem
    with a Lagrangian by gradient steps; the optimum is the same). Returns (alpha, beta).
    """
    s_alpha, s_beta = weight_scores(reward, gen_logp, weighting)
    cat = classify_samples(reward, gen_logp, k)
    lo_a, hi_a = torch.full_like(s_alpha, lb), torch.full_like(s_alpha, ub)
    lo_b, hi_b = lo_a.clone(), hi_a.clone()
    for c, (da, db) in _directions(overfitting).items():
        sel = cat == c
        (lo_a if da > 0 else hi_a)[sel] = 1.0
        (lo_b if db > 0 else hi_b)[sel] = 1.0
    alpha = torch.minimum(torch.maximum(1 + s_alpha / (2 * tau), lo_a), hi_a)
    beta = torch.minimum(torch.maximum(1 + s_beta / (2 * tau), lo_b), hi_b)
    return alpha, beta


def retention_loss(logp: torch.Tensor, prev_logp: torch.Tensor, mask: torch.Tensor,
                   beta: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge-retention penalty: mean over valid tokens of beta(x) (log pi - log pi_prev)^2 ([B, T] inputs)."""
    sq = (logp - prev_logp) ** 2
    return masked_mean(sq if beta is None else beta * sq, mask)


class CPPO(RLHF):
    """PPO-RLHF plus CPPO's weighted retention term (or a baseline penalty, per `cfg.retention`)."""

    def __init__(self, cfg: CPPOConfig, *args, **kwargs):
        self.check_config(cfg)
        self.task_index = -1  # start_task() in the base constructor makes it 0
        super().__init__(cfg, *args, **kwargs)

    @staticmethod
    def check_config(cfg: CPPOConfig) -> None:
        RLHF.check_config(cfg)
        if cfg.retention not in RETENTIONS:
            raise ValueError(f"algo.retention={cfg.retention!r}; choose one of {', '.join(RETENTIONS)}")
        if cfg.overfitting not in ("learn", "ignore"):
            raise ValueError(f"algo.overfitting={cfg.overfitting!r}; choose learn or ignore")
        if cfg.weighting not in WEIGHTINGS:
            raise ValueError(f"algo.weighting={cfg.weighting!r}; choose paper (alpha from the probability z-score) "
                             "or swapped (alpha from the reward z-score)")
        if cfg.anchor not in ANCHORS:
            raise ValueError(f"algo.anchor={cfg.anchor!r}; choose prev_task (pi_(t-1)) or rollout (the sampling policy)")
        if cfg.learned_tau <= 0:
            raise ValueError(f"algo.learned_tau={cfg.learned_tau} must be > 0")
        if not 0 < cfg.lb <= 1 <= cfg.ub or cfg.lb == cfg.ub:
            raise ValueError(f"need 0 < lb <= 1 <= ub with lb < ub; got lb={cfg.lb}, ub={cfg.ub}")

    def start_task(self) -> None:
        super().start_task()
        self.task_index += 1
        self.prev_params = [p.detach().clone() for p in self.policy.parameters()]

    @property
    def retaining(self) -> bool:
        """Retention starts with the second task: on the first, pi_{t-1} would be the SFT policy,
        which the reference KL already anchors (docs/cppo.md)."""
        return self.cfg.retention != "none" and self.task_index >= 1

    def token_rewards(self, score: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        reward = super().token_rewards(score, batch)
        if self.cfg.retention == "kl" and self.retaining:  # KL(pi || pi_prev) estimated per token, as the reference KL
            reward = reward - self.cfg.retention_coef * (batch["logp"] - batch["prev_logp"]) * batch["mask"]
        return reward

    def prepare(self, seqs: TensorDict) -> None:
        """alpha(x), beta(x) per sequence, broadcast over its tokens ([N, T])."""
        cfg = self.cfg
        if cfg.retention not in ("heuristic", "learned") or not self.retaining:
            return
        m = seqs["mask"]
        reward = seqs["score"][:, 0]
        gen_logp = (seqs["logp"] * m).sum(1) / m.sum(1)  # P(x): mean token log-prob under the sampling policy
        if cfg.retention == "heuristic":
            alpha, beta, _ = heuristic_weights(reward, gen_logp, cfg.k, cfg.lb, cfg.ub, cfg.overfitting, cfg.weighting)
        else:
            alpha, beta = learned_weights(reward, gen_logp, cfg.k, cfg.lb, cfg.ub, cfg.learned_tau, cfg.overfitting,
                                          cfg.weighting)
        cat = classify_samples(reward, gen_logp, cfg.k)
        self._category_share = {name: float((cat == c).float().mean()) for c, name in enumerate(Category.NAMES)}
        self._weight_means = {"train/alpha_mean": float(alpha.mean()), "train/beta_mean": float(beta.mean())}
        T = m.shape[1]
        seqs["alpha"] = alpha[:, None].expand(-1, T).to(m.device)
        seqs["beta"] = beta[:, None].expand(-1, T).to(m.device)

    def loss(self, mb: TensorDict, logp: torch.Tensor, value: torch.Tensor, logits: torch.Tensor):
        loss, info = super().loss(mb, logp, value, logits)
        cfg = self.cfg
        if self.retaining and cfg.retention in ("heuristic", "learned"):
            anchor = mb["prev_logp"] if cfg.anchor == "prev_task" else mb["logp"]  # pi_{t-1} or the sampling policy
            kr = retention_loss(logp, anchor, mb["mask"], mb["beta"])
            loss = loss + cfg.retention_coef * kr
            info["loss/retention"] = kr.detach()
        elif self.retaining and cfg.retention == "l2":
            l2 = sum(((p - q) ** 2).sum() for p, q in zip(self.policy.parameters(), self.prev_params))
            loss = loss + cfg.retention_coef * l2
            info["loss/l2_prev"] = l2.detach()
        return loss, info

    def update(self, batch: TensorDict) -> dict[str, float]:
        self._category_share, self._weight_means = {}, {}
        metrics = super().update(batch)
        metrics.update({f"train/share_{k}": v for k, v in self._category_share.items()})
        metrics.update(self._weight_means)
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "prev_params": self.prev_params, "task_index": self.task_index}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prev_params = [p.clone() for p in state["prev_params"]]
        self.task_index = state["task_index"]


@register("cppo", CPPOConfig, "CPPO: continual RLHF with sample-weighted knowledge retention (built-in preference stream)",
          default_env="text_stream", check=lambda cfg: check_stream(cfg, CPPO))
def train(ctx) -> dict:
    """Entry point of `python -m rlx.train algo=cppo`: the continual stream end to end."""
    return train_on_stream(ctx, CPPO)
