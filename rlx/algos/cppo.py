"""CPPO: Continual Proximal Policy Optimization (Zhang et al., "CPPO: Continual Learning for
Reinforcement Learning with Human Feedback", ICLR 2024).

The objective (paper sec. 3, eq. 5-6) weights PPO's clipped term and a knowledge-retention
penalty sample by sample:

    L(theta) = E_x[ alpha(x) * L_clip(x) ] + c_kr * E_x[ beta(x) * L_kr(x) ]  (+ value, entropy)
    L_kr(x)  = mean_t ( log pi_theta(y_t | x, y_<t) - log pi_{t-1}(y_t | x, y_<t) )^2

with pi_{t-1} the policy that finished the previous task (the SFT policy on the first task).
Samples are sorted (paper sec. 3.2.1, Table 1) by their reward r(x) and generation probability
P(x) (mean token log-prob under the sampling policy), against batch mean +/- k std:

    high-performance  r high, P high   alpha up,   beta up     (learn it and keep it)
    overfitting       r low,  P high   alpha up*,  beta down   (unlearn, do not retain)
    high-variance     r high, P low    alpha up,   beta down   (learn, nothing to retain yet)
    noisy             r low,  P low    alpha down, beta down   (likely label/reward noise)
    normal            otherwise        alpha = beta = 1

(*) configurable with `overfitting=learn|ignore`; see docs/cppo.md for why `learn` is the default.
The heuristic weights move linearly with the z-score beyond the threshold k and are clipped to
[lb, ub]: up(z) = clip(1 + |z| - k, 1, ub), down(z) = clip(1 - (|z| - k), lb, 1); alpha follows
the reward z-score, beta the probability z-score. The learned variant (`retention=learned`)
optimises per-sample weights on each batch with a Lagrangian budget instead (see
`learned_weights`). Baselines on the same code path: `retention=none` (sequential PPO), `kl`
(per-token KL penalty to pi_{t-1} in the reward) and `l2` (L2 penalty to pi_{t-1}'s parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict

from rlx.algos.continual import check_stream, train_on_stream
from rlx.algos.registry import register
from rlx.algos.rlhf import RLHF, RLHFConfig, masked_mean

__all__ = ["CPPO", "CPPOConfig", "Category", "classify_samples", "heuristic_weights", "learned_weights",
           "retention_loss"]

RETENTIONS = ("none", "kl", "l2", "heuristic", "learned")


class Category:
    """Sample categories of CPPO Table 1 (integer codes)."""

    NORMAL, HIGH_PERFORMANCE, OVERFITTING, HIGH_VARIANCE, NOISY = range(5)
    NAMES = ("normal", "high_performance", "overfitting", "high_variance", "noisy")


@dataclass
class CPPOConfig(RLHFConfig):
    """CPPO on top of PPO-RLHF; `retention` also selects the continual-learning baselines."""

    retention: str = "heuristic"  # none (sequential PPO) | kl | l2 (penalties to the previous-task policy) | heuristic | learned (CPPO)
    retention_coef: float = 0.1  # c_kr for heuristic/learned; KL coefficient for kl; L2 coefficient for l2
    k: float = 0.5  # category threshold in batch standard deviations (mean +/- k std)
    lb: float = 0.5  # lower bound of alpha and beta
    ub: float = 2.0  # upper bound of alpha and beta
    overfitting: str = "learn"  # overfitting samples (low reward, high probability): learn (alpha up) | ignore (alpha down)
    learned_budget: float = 0.1  # learned weights: E[(alpha-1)^2 + (beta-1)^2] allowed per sample
    learned_steps: int = 20  # learned weights: gradient steps on each batch
    learned_lr: float = 0.2  # learned weights: step size of the weight logits
    dual_lr: float = 1.0  # learned weights: step size of the Lagrange multiplier


def zscores(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + 1e-8) if x.numel() > 1 else torch.zeros_like(x)


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


def heuristic_weights(reward: torch.Tensor, gen_logp: torch.Tensor, k: float, lb: float, ub: float,
                      overfitting: str = "learn") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha [N], beta [N], category [N]): linear in the z-score beyond k, clipped to [lb, ub],
    exactly 1 for normal samples (and continuous at the category boundaries)."""
    zr, zp = zscores(reward.float()), zscores(gen_logp.float())
    cat = classify_samples(reward, gen_logp, k)
    up = lambda z: (1 + z.abs() - k).clamp(1, ub)  # noqa: E731
    down = lambda z: (1 - (z.abs() - k)).clamp(lb, 1)  # noqa: E731
    alpha, beta = torch.ones_like(zr), torch.ones_like(zr)
    alpha_up = {Category.HIGH_PERFORMANCE, Category.HIGH_VARIANCE} | ({Category.OVERFITTING} if overfitting == "learn" else set())
    for c in (Category.HIGH_PERFORMANCE, Category.OVERFITTING, Category.HIGH_VARIANCE, Category.NOISY):
        sel = cat == c
        alpha[sel] = (up if c in alpha_up else down)(zr[sel])
        beta[sel] = (up if c == Category.HIGH_PERFORMANCE else down)(zp[sel])
    return alpha, beta, cat


def learned_weights(reward: torch.Tensor, gen_logp: torch.Tensor, lb: float, ub: float, budget: float,
                    multiplier: float, steps: int = 20, lr: float = 0.2, dual_lr: float = 1.0,
                    overfitting: str = "learn") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-sample weights learned on one batch (rlx's form of CPPO's learnable weighting):

        max_{alpha, beta in [lb, ub]}  E[alpha * s_alpha + beta * s_beta] - lam * (E[(alpha-1)^2 + (beta-1)^2] - budget)

    with s_alpha = max(z_r, z_p) (z_r under `overfitting=ignore`) and s_beta = min(z_r, z_p), the
    smooth scores whose signs reproduce Table 1's directions; lam >= 0 is the Lagrange multiplier of
    the deviation budget, updated by dual ascent and carried across batches. Returns (alpha, beta, lam).
    """
    zr, zp = zscores(reward.float()), zscores(gen_logp.float())
    s_alpha = torch.maximum(zr, zp) if overfitting == "learn" else zr
    s_beta = torch.minimum(zr, zp)
    start = torch.logit(torch.tensor((1 - lb) / (ub - lb)))  # weight 1 at initialisation
    logits = torch.full((2, zr.numel()), float(start), requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    lam = multiplier
    for _ in range(steps):
        w = lb + (ub - lb) * torch.sigmoid(logits)  # [2, N]: alpha, beta
        deviation = ((w - 1) ** 2).sum(0).mean()
        objective = (w[0] * s_alpha + w[1] * s_beta).mean() - lam * (deviation - budget)
        opt.zero_grad()
        (-objective).backward()
        opt.step()
        lam = max(0.0, lam + dual_lr * (float(deviation.detach()) - budget))
    w = (lb + (ub - lb) * torch.sigmoid(logits)).detach()
    return w[0], w[1], lam


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
        self.multiplier = 1.0  # Lagrange multiplier of the learned weights

    @staticmethod
    def check_config(cfg: CPPOConfig) -> None:
        RLHF.check_config(cfg)
        if cfg.retention not in RETENTIONS:
            raise ValueError(f"algo.retention={cfg.retention!r}; choose one of {', '.join(RETENTIONS)}")
        if cfg.overfitting not in ("learn", "ignore"):
            raise ValueError(f"algo.overfitting={cfg.overfitting!r}; choose learn or ignore")
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
            alpha, beta, cat = heuristic_weights(reward, gen_logp, cfg.k, cfg.lb, cfg.ub, cfg.overfitting)
            self._category_share = {name: float((cat == c).float().mean()) for c, name in enumerate(Category.NAMES)}
        else:
            alpha, beta, self.multiplier = learned_weights(
                reward, gen_logp, cfg.lb, cfg.ub, cfg.learned_budget, self.multiplier, cfg.learned_steps,
                cfg.learned_lr, cfg.dual_lr, cfg.overfitting)
            self._category_share = {}
        T = m.shape[1]
        seqs["alpha"] = alpha[:, None].expand(-1, T).to(m.device)
        seqs["beta"] = beta[:, None].expand(-1, T).to(m.device)

    def loss(self, mb: TensorDict, logp: torch.Tensor, value: torch.Tensor, logits: torch.Tensor):
        loss, info = super().loss(mb, logp, value, logits)
        cfg = self.cfg
        if self.retaining and cfg.retention in ("heuristic", "learned"):
            kr = retention_loss(logp, mb["prev_logp"], mb["mask"], mb["beta"])
            loss = loss + cfg.retention_coef * kr
            info["loss/retention"] = kr.detach()
        elif self.retaining and cfg.retention == "l2":
            l2 = sum(((p - q) ** 2).sum() for p, q in zip(self.policy.parameters(), self.prev_params))
            loss = loss + cfg.retention_coef * l2
            info["loss/l2_prev"] = l2.detach()
        return loss, info

    def update(self, batch: TensorDict) -> dict[str, float]:
        self._category_share = {}
        metrics = super().update(batch)
        metrics.update({f"train/share_{k}": v for k, v in self._category_share.items()})
        if self.cfg.retention == "learned":
            metrics["train/lagrange_multiplier"] = self.multiplier
        return metrics

    def state_dict(self) -> dict:
        return {**super().state_dict(), "prev_params": self.prev_params, "multiplier": self.multiplier,
                "task_index": self.task_index}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prev_params = [p.clone() for p in state["prev_params"]]
        self.multiplier, self.task_index = state["multiplier"], state["task_index"]


@register("cppo", CPPOConfig, "CPPO: continual RLHF with sample-weighted knowledge retention (built-in preference stream)",
          default_env="text_stream", check=lambda cfg: check_stream(cfg, CPPO))
def train(ctx) -> dict:
    """Entry point of `python -m rlx.train algo=cppo`: the continual stream end to end."""
    return train_on_stream(ctx, CPPO)
