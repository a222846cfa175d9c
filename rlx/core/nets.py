"""Networks shared by every algorithm: MLPs, value/Q heads, policy distributions.

Distributions are small classes with the three things a loss needs
(`sample`, `log_prob`, `entropy`) plus `mode` for deterministic evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


def activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Sequential):
    """Linear -> act -> ... -> Linear. `layer_norm` adds LayerNorm after each hidden Linear
    (the offline-RL default since Ball et al. 2023); `out_gain` scales the orthogonal init
    of the last layer (0.01 for policy logits, 1.0 for values, as in CleanRL's PPO)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64),
        act: str = "tanh",
        layer_norm: bool = False,
        out_gain: float = 1.0,
        orthogonal: bool = True,
    ):
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers.append(_init(nn.Linear(d_in, d_out), math.sqrt(2), orthogonal))
            if layer_norm:
                layers.append(nn.LayerNorm(d_out))
            layers.append(activation(act)())
        layers.append(_init(nn.Linear(dims[-1], out_dim), out_gain, orthogonal))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


def _init(layer: nn.Linear, gain: float, orthogonal: bool) -> nn.Linear:
    if orthogonal:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class EnsembleMLP(nn.Module):
    """`n` independent `MLP`s as one batched network: x [B, in] (shared) or [n, B, in] ->
    [n, B, out]. Layer l stores every member's weights stacked, `weight{l}` [n, in, out] and
    `bias{l}` [n, 1, out] (and `norm_weight{l}` / `norm_bias{l}` [n, 1, out] with `layer_norm`),
    so a forward is one `baddbmm` per layer for all members instead of n small matmuls.
    Members start exactly as n `MLP(in, out, **mlp_kwargs)` built in a row would (same init,
    same RNG draws). A state dict of the old layout, a ModuleList of MLPs under `legacy`
    (`qs.0.0.weight`, ...), is converted on load.

    Members may differ in their output: `out_dim` a list of n widths and `out_gains` a list of
    n last-layer gains (PPO's critic and actor as one network: `EnsembleMLP(obs, [1, A], 2,
    out_gains=[1.0, 0.01])`). The last layer is then stored at the widest width, a narrower
    member's extra columns zero: they never reach a loss, get zero gradients and stay zero
    under Adam. `forward` returns [n, B, max(out_dim)]; `out_dims[i]` says how many of member
    i's columns are real (`member=i` returns only those)."""

    def __init__(self, in_dim: int, out_dim: int | Sequence[int], n: int = 2, legacy: str = "nets",
                 out_gains: Sequence[float] | None = None, **mlp_kwargs):
        super().__init__()
        out_dims = [int(out_dim)] * n if isinstance(out_dim, int) else [int(d) for d in out_dim]
        if len(out_dims) != n or (out_gains is not None and len(out_gains) != n):
            raise ValueError(f"EnsembleMLP of {n} members got {len(out_dims)} out_dim and "
                             f"{n if out_gains is None else len(out_gains)} out_gains; give one per member")
        if out_gains is not None:
            mlp_kwargs.pop("out_gain", None)
        mlps = [MLP(in_dim, d, **mlp_kwargs, **({} if out_gains is None else {"out_gain": out_gains[i]}))
                for i, d in enumerate(out_dims)]
        self.out_dims, width = out_dims, max(out_dims)
        self.n, self.in_dim, self.out_dim, self.legacy = n, in_dim, width, legacy
        self.layer_norm = any(isinstance(m, nn.LayerNorm) for m in mlps[0])
        self.act = next((m for m in mlps[0] if not isinstance(m, (nn.Linear, nn.LayerNorm))), nn.Identity())
        linears = [[m for m in mlp if isinstance(m, nn.Linear)] for mlp in mlps]
        norms = [[m for m in mlp if isinstance(m, nn.LayerNorm)] for mlp in mlps]
        self.depth = len(linears[0])
        self._names = [(f"weight{layer}", f"bias{layer}") for layer in range(self.depth)]
        self.eps = norms[0][0].eps if self.layer_norm else 1e-5
        with torch.no_grad():
            for layer in range(self.depth):
                w = [ls[layer].weight.T for ls in linears]  # [in, out_i]
                b = [ls[layer].bias for ls in linears]
                if layer == self.depth - 1:  # members' widths may differ: zero columns up to the widest
                    w, b = [F.pad(x, (0, width - x.shape[-1])) for x in w], [F.pad(x, (0, width - x.shape[-1])) for x in b]
                self.register_parameter(f"weight{layer}", nn.Parameter(torch.stack(w)))
                self.register_parameter(f"bias{layer}", nn.Parameter(torch.stack(b)[:, None]))
            for layer in range(self.depth - 1 if self.layer_norm else 0):
                self.register_parameter(f"norm_weight{layer}", nn.Parameter(torch.stack([ns[layer].weight for ns in norms])[:, None]))
                self.register_parameter(f"norm_bias{layer}", nn.Parameter(torch.stack([ns[layer].bias for ns in norms])[:, None]))

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """[n, B, max(out_dims)]; with `member`, that member alone: [B, out_dims[member]] (x [B, in])."""
        params, act = self._parameters, self.act  # direct lookups: this runs on every env step of a rollout
        relu = type(act) is nn.ReLU  # in place on the fresh layer output (autograd-safe: relu saves its output)
        for layer, (wn, bn) in enumerate(self._names):
            w, b = params[wn], params[bn]
            if member is not None:
                x = torch.addmm(b[member], x, w[member])
            elif x.dim() == 2:  # the input all members share: broadcast, no copy
                x = torch.baddbmm(b, x.expand(self.n, *x.shape), w)
            else:
                x = torch.baddbmm(b, x, w)
            if layer < self.depth - 1:
                if self.layer_norm:
                    nw, nb = getattr(self, f"norm_weight{layer}"), getattr(self, f"norm_bias{layer}")
                    if member is not None:
                        nw, nb = nw[member], nb[member]
                    x = torch.addcmul(nb, F.layer_norm(x, x.shape[-1:], eps=self.eps), nw)
                x = x.relu_() if relu else act(x)
        return x if member is None or self.out_dims[member] == self.out_dim else x[..., : self.out_dims[member]]

    @property
    def closed_form_backward(self) -> bool:
        """Whether `forward_cached` / `backward_cached` apply: no layer norm and an activation
        whose derivative follows from its output (tanh, relu, or none)."""
        return not self.layer_norm and isinstance(self.act, (nn.Tanh, nn.ReLU, nn.Identity))

    @torch.no_grad()
    def forward_cached(self, x: torch.Tensor, member: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`forward(x)` without autograd, keeping what `backward_cached` needs: (out [n, B, W],
        cache). Only where `closed_form_backward`. With `member` (x [B, in]): that member alone,
        out [B, W] and a cache of [B, .] tensors (for `member_input_grad_cached`)."""
        params, tanh = self._parameters, isinstance(self.act, nn.Tanh)
        relu = isinstance(self.act, nn.ReLU)
        cache = [x if member is not None else x.expand(self.n, *x.shape) if x.dim() == 2 else x]
        for layer, (wn, bn) in enumerate(self._names):
            if member is None:
                x = torch.baddbmm(params[bn], cache[-1], params[wn])
            else:
                x = torch.addmm(params[bn][member], cache[-1], params[wn][member])
            if layer < self.depth - 1:
                if tanh:
                    x.tanh_()
                elif relu:
                    x.relu_()
                cache.append(x)
        return x, cache

    @torch.no_grad()
    def backward_cached(self, cache: list[torch.Tensor], grad: torch.Tensor,
                        out: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The gradients of `sum(grad * out)` with respect to the parameters, in
        `self.parameters()` order (weight0, bias0, weight1, ...): two `bmm`s and a sum per layer
        and the activation's derivative from its cached output, with no autograd graph. `out`:
        tensors of the parameters' shapes to write the gradients into (no allocation)."""
        params, tanh = self._parameters, isinstance(self.act, nn.Tanh)
        relu = isinstance(self.act, nn.ReLU)
        grads: list[torch.Tensor] = [None] * (2 * self.depth) if out is None else list(out)  # type: ignore[list-item]
        for layer in range(self.depth - 1, -1, -1):
            inp = cache[layer]
            if out is None:
                grads[2 * layer] = torch.bmm(inp.transpose(1, 2), grad)  # [n, in, out]
                grads[2 * layer + 1] = grad.sum(1, keepdim=True)  # [n, 1, out]
            else:
                torch.bmm(inp.transpose(1, 2), grad, out=grads[2 * layer])
                torch.sum(grad, 1, keepdim=True, out=grads[2 * layer + 1])
            if layer:
                grad = torch.bmm(grad, params[self._names[layer][0]].transpose(1, 2))  # [n, B, in]
                if tanh:
                    grad = torch.ops.aten.tanh_backward(grad, inp)
                elif relu:
                    grad = torch.ops.aten.threshold_backward(grad, inp, 0)  # what autograd runs for relu
        return grads

    @torch.no_grad()
    def input_grad_cached(self, cache: list[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
        """The gradient of `sum(grad * out)` with respect to `forward_cached`'s input, with no
        parameter gradients (a frozen critic's dQ/da for an actor): [B, in] summed over the
        members when the input was shared ([B, in]), else [n, B, in]."""
        params, tanh = self._parameters, isinstance(self.act, nn.Tanh)
        relu = isinstance(self.act, nn.ReLU)
        for layer in range(self.depth - 1, -1, -1):
            grad = torch.bmm(grad, params[self._names[layer][0]].transpose(1, 2))  # [n, B, in]
            if layer:
                if tanh:
                    grad = torch.ops.aten.tanh_backward(grad, cache[layer])
                elif relu:
                    grad = torch.ops.aten.threshold_backward(grad, cache[layer], 0)
        return grad.sum(0) if cache[0].stride(0) == 0 else grad

    @torch.no_grad()
    def member_input_grad_cached(self, cache: list[torch.Tensor], member: int, rows: torch.Tensor | None = None,
                                 cols: slice | None = None) -> torch.Tensor:
        """The gradient of `sum(out[member, rows])` (every output column) with respect to the
        input columns `cols` of those rows: [len(rows), in] (all rows / columns when None), through
        member `member` alone, with no autograd. `cache`: `forward_cached(x)`'s (all members; the
        rows are gathered) or `forward_cached(x, member)`'s. A twin critic's dQ/da under min(Q1, Q2)
        runs each member only on the rows where it is the min: half the work of `input_grad_cached`
        on a gradient that is zero in the other member's rows."""
        params, tanh = self._parameters, isinstance(self.act, nn.Tanh)
        relu = isinstance(self.act, nn.ReLU)
        n_rows = cache[0].shape[-2] if rows is None else rows.numel()
        g = None
        for layer in range(self.depth - 1, -1, -1):
            w = params[self._names[layer][0]][member]  # [in, out]
            if layer == 0 and cols is not None:
                w = w[cols]
            # the all-ones output gradient: every row starts as the row sums of the last weight
            g = w.sum(1).expand(n_rows, w.shape[0]) if g is None else torch.mm(g, w.t())
            if layer:
                h = cache[layer][member] if cache[layer].dim() == 3 else cache[layer]
                if rows is not None:
                    h = h.index_select(0, rows)
                if tanh:
                    g = torch.ops.aten.tanh_backward(g, h)
                elif relu:
                    g = torch.ops.aten.threshold_backward(g, h, 0)
        return g.contiguous() if g.stride(0) == 0 else g

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = f"{prefix}{self.legacy}."
        if any(k.startswith(old) for k in state_dict):  # n MLPs (Linear [, LayerNorm], act, ...) -> stacked
            stride = 3 if self.layer_norm else 2
            for layer in range(self.depth):
                at = f"{old}{{i}}.{layer * stride}"
                ws = [state_dict.pop(f"{at.format(i=i)}.weight") for i in range(self.n)]
                bs = [state_dict.pop(f"{at.format(i=i)}.bias") for i in range(self.n)]
                if layer == self.depth - 1:  # the narrower members' zero columns
                    ws = [F.pad(w, (0, 0, 0, self.out_dim - w.shape[0])) for w in ws]
                    bs = [F.pad(b, (0, self.out_dim - b.shape[0])) for b in bs]
                state_dict[f"{prefix}weight{layer}"] = torch.stack([w.T for w in ws])
                state_dict[f"{prefix}bias{layer}"] = torch.stack(bs)[:, None]
                if self.layer_norm and layer < self.depth - 1:
                    at = f"{old}{{i}}.{layer * stride + 1}"
                    state_dict[f"{prefix}norm_weight{layer}"] = torch.stack(
                        [state_dict.pop(f"{at.format(i=i)}.weight") for i in range(self.n)])[:, None]
                    state_dict[f"{prefix}norm_bias{layer}"] = torch.stack(
                        [state_dict.pop(f"{at.format(i=i)}.bias") for i in range(self.n)])[:, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class EnsembleQ(EnsembleMLP):
    """`n` independent Q(s, a) MLPs in one batched network -> [n, B] (twin Q for n=2);
    `forward(obs, action, member=i)` -> [B] evaluates member i alone (TD3's actor loss)."""

    def __init__(self, obs_dim: int, act_dim: int, n: int = 2, **mlp_kwargs):
        super().__init__(obs_dim + act_dim, 1, n, legacy="qs", **mlp_kwargs)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, member: int | None = None) -> torch.Tensor:
        return super().forward(torch.cat([obs, action], dim=-1), member).squeeze(-1)  # [n, B] or [B]


def legacy_ensemble_error(modules_state: dict, legacy: str = "qs") -> None:
    """A one-line error for resuming a checkpoint written while an ensemble was n separate MLPs
    (keys `...qs.0.0.weight`): its networks load, its optimizer state has another layout."""
    if any(f".{legacy}." in k or k.startswith(f"{legacy}.") for k in modules_state):
        raise ValueError("this checkpoint was written before rlx's ensembles (twin critics, HILP's phi) became one "
                         "batched EnsembleMLP: "
                         "its networks still load (module.load_state_dict) but its optimizer state cannot be "
                         "resumed; start a new run")


# ----------------------------------------------------------------------------- distributions


class Categorical:
    """Categorical over the last dim of `logits` [..., A]; optional bool `mask` (True = allowed)."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None):
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        self.logits = logits.log_softmax(-1)  # one kernel and one backward node (logsumexp + sub: several)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: one draw per row, reproducible with an explicit generator.
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        return (self.logits - torch.log(-torch.log(u.clamp_min(1e-20)))).argmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        p = self.logits.exp()
        return -(p * self.logits.nan_to_num(neginf=0.0)).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)


class SegmentCategorical:
    """Categorical over ragged action sets: flat logits [K] split into E segments by CSR `ptr`
    [E + 1] (per-graph actions of a batch of graphs), optional bool `mask` [K] (True = allowed).
    Log-probs come from `rlx.kernels.segment_log_softmax`, draws from `segment_sample`;
    actions are *global* row indices into the flat logits (`local = action - ptr[:-1]`).
    `width` declares that every segment has that size (a fixed action space): the same
    distribution is then computed densely on [E, width], which is cheaper for small batches."""

    def __init__(self, logits: torch.Tensor, ptr: torch.Tensor, mask: torch.Tensor | None = None,
                 width: int | None = None):
        from rlx import kernels

        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        self.ptr, self.width = ptr, width
        if width is None:
            self.logits = kernels.segment_log_softmax(logits, ptr)  # [K] normalized per segment
        else:
            self.logits = logits.reshape(-1, width).log_softmax(-1).nan_to_num(nan=-math.inf, neginf=-math.inf).reshape(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        from rlx import kernels

        if self.width is None:
            return kernels.segment_sample(self.logits, self.ptr, generator)
        # the same Gumbel-max draw as segment_sample: one float32 uniform per row
        u = torch.rand(self.logits.shape[0], generator=generator, device=self.logits.device, dtype=torch.float32)
        scores = (self.logits.detach().float() - torch.log(-torch.log(u))).reshape(-1, self.width)  # [E, width]
        return scores.argmax(-1) + self.ptr[:-1]

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.logits[action]

    def entropy(self) -> torch.Tensor:
        from rlx import kernels

        p = self.logits.exp()
        return -kernels.segment_sum(p * self.logits.nan_to_num(neginf=0.0), self.ptr)


class Normal:
    """Diagonal Gaussian over the last dim; log_prob and entropy sum over action dims."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean, self.log_std = mean, log_std.expand_as(mean)
        self.std = self.log_std.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def rsample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        z = (action - self.mean) / self.std
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean


class TanhNormal(Normal):
    """Gaussian squashed by tanh into (-1, 1) (SAC-style); log_prob includes the tanh Jacobian.
    Rescale to env bounds outside. Entropy has no closed form: the pre-tanh entropy is returned."""

    eps = 1e-6

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tanh(super().sample(generator))

    def rsample(self) -> torch.Tensor:
        return torch.tanh(super().rsample())

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        a = action.clamp(-1 + self.eps, 1 - self.eps)
        pre_tanh = torch.atanh(a)
        # log|d tanh(u)/du| = 2 * (log 2 - u - softplus(-2u)), stable for large |u|
        log_det = 2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))
        return super().log_prob(pre_tanh) - log_det.sum(-1)

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean)


class GaussianHead(nn.Module):
    """Maps features to a (Tanh)Normal. `state_dependent_std=False` keeps a learned
    log-std vector (PPO's choice); True predicts it (SAC/AWR actors)."""

    def __init__(self, in_dim: int, act_dim: int, tanh: bool = False, state_dependent_std: bool = False,
                 log_std_init: float = 0.0, log_std_bounds: tuple[float, float] = (-5.0, 2.0)):
        super().__init__()
        self.tanh, self.state_dependent_std, self.bounds = tanh, state_dependent_std, log_std_bounds
        self.mean = _init(nn.Linear(in_dim, act_dim), 0.01, True)
        if state_dependent_std:
            self.log_std = _init(nn.Linear(in_dim, act_dim), 0.01, True)
        else:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, h: torch.Tensor) -> Normal:
        log_std = self.log_std(h) if self.state_dependent_std else self.log_std
        log_std = log_std.clamp(*self.bounds)
        return (TanhNormal if self.tanh else Normal)(self.mean(h), log_std)


# ----------------------------------------------------------------------------- normalization


def batch_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """`x.mean(0), x.var(0), len(x)` with the same arithmetic as numpy's (sum, then divide)
    but without its Python wrappers, which cost more than the sums at a rollout step's few rows;
    one row: the row itself and zero."""
    b = x.shape[0]
    if b == 1:
        return x[0], np.zeros_like(x[0]), 1
    mean = np.add.reduce(x, 0) / b
    d = x - mean
    return mean, np.add.reduce(d * d, 0) / b, b


def merge_moments(mean, var, count, b_mean, b_var, b):
    """Chan et al.'s parallel update: the (mean, var, count) of a running population of `count`
    rows merged with a batch of `b` rows of moments (b_mean, b_var). Works on floats, numpy
    arrays and tensors alike (RunningMeanStd's two paths and RewardScaler)."""
    delta, total = b_mean - mean, count + b
    return mean + delta * b / total, (var * count + b_var * b + delta**2 * count * b / total) / total, total


class RunningMeanStd(nn.Module):
    """Running mean/variance (Chan et al. parallel update), kept as buffers so it is saved
    with the learner's state_dict. `normalize` clips to +-clip like SB3's VecNormalize.

    Both run every env step of a rollout, on a handful of rows: on CPU they are numpy on views
    of the buffers and of the input (a few microseconds; as ~15 torch ops they were a fifth of a
    MuJoCo PPO rollout), with the same float64 statistics and the same float32 arithmetic as
    the torch path that inputs on other devices (or needing gradients) take."""

    def __init__(self, shape: Sequence[int] = (), clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))

    def _numpy(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.mean.device.type == "cpu" and not x.requires_grad

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if self._numpy(x):
            xs = x.reshape(-1, *self.mean.shape).numpy().astype(np.float64)  # [B, *shape]
            mean, var, count = self.mean.numpy(), self.var.numpy(), self.count.numpy()  # views: written in place
            mean[...], var[...], count[...] = merge_moments(mean, var, float(count), *batch_mean_var(xs))
            return
        x = x.reshape(-1, *self.mean.shape).double()  # [B, *shape]
        new = merge_moments(self.mean, self.var, self.count, x.mean(0), x.var(0, unbiased=False), x.shape[0])
        for buf, value in zip((self.mean, self.var, self.count), new):
            buf.copy_(value)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self._numpy(x) and x.dtype in (torch.float32, torch.float64):
            dt = x.numpy().dtype
            out = (x.numpy() - self.mean.numpy().astype(dt)) / np.sqrt(self.var.numpy().astype(dt) + dt.type(self.eps))
            return torch.from_numpy(np.clip(out, -self.clip, self.clip, out=out))
        out = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)
        return out.clamp(-self.clip, self.clip)

