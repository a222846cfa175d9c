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
from rlx.core.learner import grad_buffers, make_optimizer, optimizer_step, overridden
from rlx.core.loops import OnPolicyLoop, evaluate_policy
from rlx.core.nets import ACTIVATIONS, Categorical, EnsembleMLP, Normal, RunningMeanStd
from rlx.core.ranges import bounded, count, each, nonneg, one_of, positive, unit
from rlx.envs.registry import make_env, make_vec_env

__all__ = ["PPO", "PPOConfig", "ActorCritic", "ClipBoxActions", "clipped_surrogate", "value_loss", "explained_variance"]


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


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
NUMPY_HEAD = True  # compute the loss head with numpy on CPU (False: torch everywhere; the tests run both)
FUSED_NETWORK = True  # run the network's forward and backward inside the loss node where it can (tests run both)
_LOSS_STATS = ("loss/policy", "loss/value", "loss/entropy", "train/approx_kl", "train/clipfrac")


class _NumpyOps:
    """The array operations `_head_terms` needs, on numpy arrays (CPU: a numpy call on PPO's
    64-512-row minibatches costs ~1 us of fixed overhead where a torch call costs 2-4 us)."""

    exp, log, maximum, where = np.exp, np.log, np.maximum, np.where
    clip = staticmethod(np.clip)

    @staticmethod
    def log_softmax(x):
        z = x - x.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    @staticmethod
    def take(x, index):  # x [B, A], index [B] -> x[b, index[b]]
        return np.take_along_axis(x, index[:, None], -1)[:, 0]

    @staticmethod
    def add_at(x, index, values):  # x[b, index[b]] += values[b]
        x[np.arange(x.shape[0]), index] += values

    @staticmethod
    def std(x):
        return x.std(ddof=1)  # unbiased, as torch's

    @staticmethod
    def fraction(mask):
        return mask.mean()

    @staticmethod
    def stack(xs, like):
        return np.array(xs, dtype=like.dtype)

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, like.dtype)


class _TorchOps:
    """The same operations on torch tensors (any device)."""

    exp, log, maximum, where = torch.exp, torch.log, torch.maximum, torch.where
    clip = staticmethod(torch.clamp)

    @staticmethod
    def log_softmax(x):
        return x.log_softmax(-1)

    @staticmethod
    def take(x, index):
        return x.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def add_at(x, index, values):
        x.scatter_add_(-1, index.unsqueeze(-1), values.unsqueeze(-1))

    @staticmethod
    def std(x):
        return x.std()

    @staticmethod
    def fraction(mask):
        return mask.float().mean()

    @staticmethod
    def stack(xs, like):  # every term is a tensor on this path
        return torch.stack(xs)

    @staticmethod
    def zeros(shape, like):
        return like.new_zeros(shape)


def _head_terms(ops, raw, log_std, action, old_logp, adv, old_value, ret, discrete, clip, value_clip, ent_coef,
                vf_coef, norm_adv, bounds):
    """PPO's minibatch loss from the network's raw output and its gradient, in closed form.

    raw [2, B, W]: row 0 column 0 the value, row 1 the actor output (logits, or the Gaussian
    mean; W = A). Returns (loss, stats [5]: policy loss, value loss, entropy, approx KL, clip
    fraction, d loss / d raw [2, B, W], d loss / d log_std [A] or None), every array of `ops`'
    kind. The per-row terms are those of `clipped_surrogate`, `value_loss` and `Categorical` /
    `Normal`, in the same order; the subgradients are autograd's on that composite: the
    surrogate passes the gradient where the ratio is inside the clip range or the unclipped
    term is the larger, the value loss through whichever squared error is larger (the clipped
    one only inside its range), `log_std` inside its bounds."""
    out, value = raw[1], raw[0, :, 0]
    n = out.shape[0]
    if discrete:
        logp_all = ops.log_softmax(out)  # [B, A]
        p = ops.exp(logp_all)
        logp = ops.take(logp_all, action)
        rows_h = -(p * logp_all).sum(-1)  # [B]
    else:
        ls = ops.clip(log_std, *bounds)  # [A]
        std = ops.exp(ls)
        z = (action - out) / std  # [B, A]
        logp = (-0.5 * (z * z) - ls - _HALF_LOG_2PI).sum(-1)
        entropy = (0.5 + _HALF_LOG_2PI + ls).sum()  # the same on every row
    if norm_adv and n > 1:
        adv = (adv - adv.mean()) / (ops.std(adv) + 1e-8)
    log_ratio = logp - old_logp
    ratio = ops.exp(log_ratio)
    ratio_c = ops.clip(ratio, 1 - clip, 1 + clip)
    s1 = -adv * ratio
    pg_rows = ops.maximum(s1, -adv * ratio_c)
    r1 = ratio - 1
    d = value - ret
    if value_clip is None:
        v_rows, d_value = d * d, d
    else:
        moved = value - old_value
        moved_c = ops.clip(moved, -value_clip, value_clip)
        dc = old_value + moved_c - ret
        un, cl = d * d, dc * dc
        v_rows = ops.maximum(un, cl)
        d_value = ops.where(un >= cl, d, dc * (moved_c == moved))
    stats = ops.stack([pg_rows.mean(), 0.5 * v_rows.mean(), rows_h.mean() if discrete else entropy,
                       (r1 - log_ratio).mean(), ops.fraction(abs(r1) > clip)], like=raw)
    loss = stats[0] - ent_coef * stats[2] + vf_coef * stats[1]
    # gradients, every term a mean over the B rows
    g = 1.0 / n
    d_logp = s1 * ((ratio_c == ratio) | (s1 >= pg_rows)) * g  # [B]: -A ratio where the surrogate passes it
    grad = ops.zeros(raw.shape, like=raw)
    grad_log_std = None
    if discrete:  # d logp / d logits = onehot - p;  d H / d logits = -p (log p + H)
        grad[1] = p * ((g * ent_coef) * (logp_all + rows_h[:, None]) - d_logp[:, None])
        ops.add_at(grad[1], action, d_logp)
    else:
        dz = d_logp[:, None] * z
        grad[1] = dz / std  # d logp / d mean = z / std
        if log_std is not None:  # d logp / d log_std = z^2 - 1;  d H / d log_std = 1
            grad_log_std = ((dz * z - d_logp[:, None]).sum(0) - ent_coef) * (ls == log_std)
    grad[0, :, 0] = (g * vf_coef) * d_value
    return loss, stats, grad, grad_log_std


def _loss_and_grads(x, net, log_std, action, old_logp, adv, old_value, ret, discrete, clip, value_clip, ent_coef,
                    vf_coef, norm_adv, bounds, use_numpy, grads_out=None):
    """PPO's minibatch loss and its gradient, with no autograd: (loss, stats [5], grads, grad_log_std).

    With `net` (an `EnsembleMLP` whose `closed_form_backward` holds: tanh or relu, no layer norm)
    `x` is the observations [B, obs_dim]; the network runs with `forward_cached` and `grads` are
    its parameters' gradients (`backward_cached`, written into `grads_out` when given). Without,
    `x` is the network's raw output [2, B, W] and `grads` its gradient. The loss terms and the
    gradient with respect to the raw output are `_head_terms`, on CPU with numpy on views of the
    same memory (`use_numpy`), else with torch."""
    if discrete:
        action = action.long()
    raw, cache = (x, None) if net is None else net.forward_cached(x)
    if use_numpy:
        arrays = [None if t is None else t.detach().numpy() for t in (raw, log_std, action, old_logp, adv, old_value, ret)]
        with np.errstate(all="ignore"):  # inf / NaN propagate silently, as in torch (the loops check for them)
            loss, stats, grad, grad_ls = _head_terms(_NumpyOps, *arrays, discrete, clip, value_clip, ent_coef, vf_coef,
                                                     norm_adv, bounds)
        loss, stats, grad = torch.tensor(loss), torch.from_numpy(stats), torch.from_numpy(grad)
        grad_ls = None if grad_ls is None else torch.from_numpy(grad_ls)
    else:
        with torch.no_grad():
            loss, stats, grad, grad_ls = _head_terms(_TorchOps, raw, log_std, action, old_logp, adv, old_value, ret,
                                                     discrete, clip, value_clip, ent_coef, vf_coef, norm_adv, bounds)
    grads = grad if net is None else net.backward_cached(cache, grad, out=grads_out)
    return loss, stats, grads, grad_ls


class _PPOHeadLoss(torch.autograd.Function):
    """PPO's whole minibatch loss (clipped surrogate + vf_coef x value loss - ent_coef x entropy)
    as one autograd node whose forward also computes the gradient (`_loss_and_grads`) and whose
    backward only scales it.

    Composed of torch ops the loss was ~30 autograd nodes on a [B]-sized minibatch, and at PPO's
    sizes (B = 64-512 rows) every node costs its fixed dispatch and engine overhead, not
    arithmetic. Given the network (`net`), the node also runs the network and its backward, so
    a minibatch's loss is one node instead of a dozen; otherwise `x` is the raw output of a
    network that autograd differentiates. The one difference from autograd on the composite is
    a tie of two different float32 products, where autograd would split the gradient in half
    (tests/algos/test_ppo_fused_loss.py checks values and gradients against the composite loss
    on every path, at ratio 1 and at an unchanged value included).

    forward(the arguments of `_loss_and_grads` but `grads_out`, *net's parameters) -> (loss, stats [5])."""

    @staticmethod
    def forward(ctx, x, net, log_std, *args_and_params):
        # the network's parameters follow the 13 arguments only so that autograd routes their gradients
        loss, stats, grads, grad_ls = _loss_and_grads(x, net, log_std, *args_and_params[:13])
        ctx.grads, ctx.has_net = (grads, grad_ls), net is not None
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad, _):
        grads, grad_ls = ctx.grads
        grad_ls = None if grad_ls is None else grad * grad_ls
        if not ctx.has_net:
            return (grad * grads, None, grad_ls) + (None,) * 13
        return (None, None, grad_ls) + (None,) * 13 + tuple(torch._foreach_mul(grads, grad))


class ActorCritic(nn.Module):
    """PPO's actor and critic as one batched network (`EnsembleMLP`, two members): member 0 the
    critic (V, last-layer gain 1.0), member 1 the actor (logits, or the Gaussian mean beside a
    learned state-independent `log_std`; gain 0.01). The members share no weights (CleanRL's
    separate networks, initialized with the same RNG draws as `MLP` critic then actor) but one
    forward evaluates both: three `baddbmm`s instead of six `Linear`s, and as many backward
    nodes fewer, on every rollout step and every minibatch.

    `forward(x [B, obs_dim]) -> (actor output [B, A], value [B])`."""

    def __init__(self, obs_dim: int, out_dim: int, hidden: tuple[int, ...], act: str, continuous: bool,
                 log_std_init: float = 0.0, log_std_bounds: tuple[float, float] = (-5.0, 2.0)):
        super().__init__()
        self.net = EnsembleMLP(obs_dim, [1, out_dim], 2, hidden=hidden, act=act, out_gains=[1.0, 0.01])
        self.log_std = nn.Parameter(torch.full((out_dim,), float(log_std_init))) if continuous else None
        self.bounds = log_std_bounds

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)  # [2, B, A]: the critic's row has V in column 0 (its other columns are zero)
        return out[1], out[0, :, 0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict of separate `actor.` / `critic.` MLPs (rlx before the batched network)
        is converted to the stacked layout."""
        if f"{prefix}critic.0.weight" in state_dict:
            depth, to = self.net.depth, f"{prefix}net.nets."
            for key in [k for k in state_dict if k.startswith(f"{prefix}critic.")]:
                state_dict[to + "0." + key[len(f"{prefix}critic."):]] = state_dict.pop(key)
            if f"{prefix}actor.2.log_std" in state_dict:  # Sequential(MLP trunk, act, GaussianHead)
                state_dict[f"{prefix}log_std"] = state_dict.pop(f"{prefix}actor.2.log_std")
                for kind in ("weight", "bias"):
                    state_dict[f"{to}1.{2 * (depth - 1)}.{kind}"] = state_dict.pop(f"{prefix}actor.2.mean.{kind}")
                for key in [k for k in state_dict if k.startswith(f"{prefix}actor.0.")]:
                    state_dict[to + "1." + key[len(f"{prefix}actor.0."):]] = state_dict.pop(key)
            else:
                for key in [k for k in state_dict if k.startswith(f"{prefix}actor.")]:
                    state_dict[to + "1." + key[len(f"{prefix}actor."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PPO(Saveable):
    """Actor-critic PPO learner for a Box observation space and a Discrete or Box action space.

    Usable on its own: `PPO(PPOConfig(), env.observation_space, env.action_space)`; then
    `act(obs)`, `value(obs)`, `update(batch)` where `batch` is a `[T, N]` TensorDict with
    `obs, action, logp, value, adv, ret` (see `rlx.core.loops.OnPolicyLoop`). Actor and critic
    are one batched network (`ActorCritic`); `heads(x)` gives the policy distribution and the
    value of processed observations in one forward.
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
        out_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.net = ActorCritic(obs_dim, out_dim, tuple(cfg.hidden), cfg.activation, not self.discrete, cfg.log_std_init)
        self.obs_rms = RunningMeanStd((obs_dim,)) if cfg.normalize_obs else None
        self.modules = self.net.to(self.device)
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

    def heads(self, x: torch.Tensor):
        """(policy distribution, value [B]) of processed observations x [B, obs_dim], one forward."""
        out, value = self.net(x)
        if self.discrete:
            return Categorical(out), value
        return Normal(out, self.net.log_std.clamp(*self.net.bounds)), value

    def dist(self, x: torch.Tensor):
        return self.heads(x)[0]

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """V of processed observations, [B, 1] (the shape of the separate critic MLP it replaced)."""
        return self.net(x)[1].unsqueeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        """Stochastic acting is data collection: it also updates the observation statistics.
        Returns the processed observation under `obs` so the rollout stores what the policy saw."""
        x = self.preprocess(obs, update_stats=not deterministic)
        dist, value = self.heads(x)
        action = dist.mode() if deterministic else dist.sample()
        return TensorDict({"action": action, "logp": dist.log_prob(action), "value": value, "obs": x},
                          batch_size=[x.shape[0]])

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(obs))[1]

    # ---------------------------------------------------------------- learning
    def _closed_form(self) -> bool:
        """Whether the network's backward is closed-form (and wanted): the loss node runs it."""
        return FUSED_NETWORK and self.net.net.closed_form_backward

    def _loss_args(self, mb, fused: bool) -> tuple:
        cfg, net = self.cfg, self.net.net
        x = mb["obs"] if fused else net(mb["obs"])  # raw: [2, B, W], V in row 0 column 0, the actor output in row 1
        return (x, net if fused else None, self.net.log_std, mb["action"], mb["logp"], mb["adv"], mb["value"],
                mb["ret"], self.discrete, cfg.clip_coef, cfg.clip_coef if cfg.clip_vloss else None, cfg.ent_coef,
                cfg.vf_coef, cfg.norm_adv, self.net.bounds, NUMPY_HEAD and x.device.type == "cpu")

    def loss(self, mb: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped surrogate (`clipped_surrogate`) + vf_coef x the (clipped) value loss
        (`value_loss`) - ent_coef x the entropy, advantages normalized per minibatch, as one
        autograd node (`_PPOHeadLoss`) that `backward()` differentiates like any loss."""
        fused = self._closed_form()
        params = tuple(self.net.net.parameters()) if fused else ()
        loss, stats = _PPOHeadLoss.apply(*self._loss_args(mb, fused), *params)
        return loss, dict(zip(_LOSS_STATS, stats.unbind()))

    def _write_grads(self, mb) -> torch.Tensor | None:
        """The minibatch's gradient written straight into the parameters' `.grad` (no autograd,
        no allocation after the first step) where the network's backward is closed-form; returns
        the stats [5], or None, having done nothing, where `loss()` + `backward()` must do it
        (another activation, layer norm, or a `loss` replaced on the instance or overridden in a
        subclass: then it is used)."""
        if overridden(self, "loss", PPO) or not self._closed_form():
            return None
        grads = grad_buffers(self.net.net.parameters())
        _, stats, _, grad_ls = _loss_and_grads(*self._loss_args(mb, True), grads_out=grads)
        if grad_ls is not None:
            self.net.log_std.grad = grad_ls
        return stats

    def update(self, batch: TensorDict) -> dict[str, float]:
        """Minibatch epochs over a `[T, N]` rollout (flattened to T*N rows, as plain tensors);
        metrics stay on the device until one conversion at the end."""
        cfg = self.cfg
        flat = {k: batch[k].flatten(0, 1) for k in ("obs", "action", "logp", "value", "adv", "ret")}  # [T*N, ...]
        mb_size = max(flat["obs"].shape[0] // cfg.num_minibatches, 1)
        rows: list[torch.Tensor] = []
        for _ in range(cfg.update_epochs):
            for mb in shuffled_minibatches(flat, mb_size):
                stats = self._write_grads(mb)
                if stats is None:
                    loss, info = self.loss(mb)
                    optimizer_step(self.optimizer, loss, max_grad_norm=cfg.max_grad_norm)
                    stats = torch.stack(list(info.values()))
                else:
                    optimizer_step(self.optimizer, None, max_grad_norm=cfg.max_grad_norm)
                rows.append(stats)
            if cfg.target_kl is not None and float(stats[3]) > cfg.target_kl:
                break
        metrics = dict(zip(_LOSS_STATS, torch.stack(rows).mean(0).tolist()))
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
        if "critic.0.weight" in state["modules"]:
            raise ValueError("this checkpoint was written before PPO's actor and critic became one batched network "
                             "(ActorCritic): its networks still load (learner.modules.load_state_dict(state['modules'])) "
                             "but its optimizer state cannot be resumed; start a new run")
        self.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.obs_rms is not None and state.get("obs_rms") is not None:
            self.obs_rms.load_state_dict(state["obs_rms"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class ClipBoxActions(gym.vector.VectorActionWrapper):
    """Clip a vector env's Box actions to its bounds in one `np.clip` per step (gymnasium's
    `ClipAction` vector wrapper clips env by env and re-concatenates: ~60 us a step, a tenth of
    a MuJoCo PPO rollout). The Gaussian policy is unbounded; the env is not."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        space = env.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"ClipBoxActions needs a Box action space, got {space}")
        self.low, self.high = space.low, space.high

    def actions(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.low, self.high)


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
        envs = ClipBoxActions(envs)  # the Gaussian is unbounded; the env is not
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
