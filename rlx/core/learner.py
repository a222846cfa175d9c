"""The Learner protocol and the optimizer / target-network helpers every learner uses.

A learner owns networks, optimizers and losses, nothing else: no env, no run dir, no
Hydra. Loops call `act` to collect data and `update` to learn from a batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch
import torch.optim.optimizer as _optim_module
from tensordict import TensorDict
from torch import nn

from rlx.core import distributed


@runtime_checkable
class Learner(Protocol):
    """What every learner of `rlx.algos` is (checked over every registered algorithm by
    tests/test_learner_protocol.py).

    * `act(obs, deterministic=False, **conditioning) -> TensorDict` with at least `action`.
      `obs` is what the learner's loop observes: a tensor [B, ...] for gym and dataset learners,
      a TensorDict of states [B] for GFlowNets, prompts [B, P] for RLHF, class labels [B] for
      DDPO (which returns its whole `[T, B]` denoising rollout). Sampling is the default;
      evaluation passes `deterministic=True` (greedy / mean action / eta = 0 DDIM). Goal and
      skill learners take their conditioning by keyword after it (`goal=`, `z=`).
    * `update(batch: TensorDict) -> dict[str, float]`: one learning step on a batch in the data
      contracts of docs/architecture.md (`[T, N]` rollouts, flat rows, or a ragged batch with
      `ptr`, see `EpisodeStore.to_batch`); returns namespaced scalars (`loss/...`, `train/...`).
    * Every optimizer step goes through `optimizer_step` below (so data-parallel runs average
      gradients and clipping is the same everywhere), on an optimizer from `make_optimizer`.
    * `state_dict()` / `load_state_dict(state)`: networks, optimizers, schedulers, normalizers,
      generators and counters, as tensors and plain containers (a checkpoint loads with
      `torch.load(weights_only=True)`); a learner built with another seed that loads the state
      acts and updates exactly like the original.
    """

    def act(self, obs: Any, deterministic: bool = False) -> TensorDict:
        """Actions for a batch of observations: a TensorDict with at least `action`
        (on-policy learners add `logp` and `value`)."""

    def update(self, batch: TensorDict) -> dict[str, float]:
        """One learning step on `batch`; returns namespaced scalar metrics (`loss/actor`, ...)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(params, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam, or AdamW when weight decay is asked for (decoupled decay, Loshchilov & Hutter)."""
    params = [p for p in params if p.requires_grad]
    # the fused kernel is one call per step instead of one per tensor: for the small MLPs of
    # RL it is the fastest Adam on CPU as well as on CUDA (scripts/bench_ppo.py)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, eps=eps, fused=fused)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor | Iterable[torch.Tensor] | None, params=None,
                   max_grad_norm: float = 0.0) -> float:
    """zero_grad -> backward -> gradient averaging across data-parallel ranks (if any) ->
    optional global-norm clipping -> step. Every learner steps through here. Returns the pre-clip
    gradient norm (0.0 when clipping is off and nothing was measured).

    `loss` may be an iterable of losses (e.g. a generator): each is backpropagated as soon as it
    is produced, so gradients accumulate over pieces whose graphs never coexist in memory (DDPO's
    accumulation over denoising steps); the step then uses the summed gradient. `loss=None`: the
    caller has already written the gradients into the parameters' `.grad` (PPO's closed-form
    minibatch gradient); the rest is the same."""
    if loss is not None:
        opt.zero_grad(set_to_none=True)
        for piece in (loss,) if isinstance(loss, torch.Tensor) else loss:
            piece.backward()
    if params is None:
        params = [p for g in opt.param_groups for p in g["params"]]
    distributed.average_gradients(params)  # data-parallel ranks step on the mean gradient
    norm = _clip_on_host(params, max_grad_norm) if max_grad_norm and max_grad_norm > 0 else 0.0
    if not _fused_adam_step(opt):
        opt.step()
    return norm


def grad_buffers(params) -> list[torch.Tensor]:
    """The parameters' `.grad` tensors, allocated as zeros where missing: the `out=` buffers of a
    learner that writes its gradients itself (closed-form backward, then `optimizer_step(opt, None)`)."""
    out = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        out.append(p.grad)
    return out


def overridden(learner: Any, name: str, base: type) -> bool:
    """Whether the method `name` of `learner` is replaced on the instance or in a subclass of
    `base`: a learner with a closed-form path for one of its losses then honours the replacement
    through autograd."""
    return name in vars(learner) or getattr(type(learner), name) is not getattr(base, name)


def _clip_on_host(params, max_norm: float) -> float:
    """`clip_grad_norm` for `optimizer_step`, which returns the norm as a host float anyway: the
    clip factor max_norm / (norm + 1e-6) is then a host float too, and the gradients are
    multiplied only when it is below 1 (the tensor version: three more tensor ops every step).
    Mixed devices or dtypes take `clip_grad_norm` (torch's grouped clip)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or any(g.device != grads[0].device or g.dtype != grads[0].dtype for g in grads):
        return float(clip_grad_norm(params, max_norm))
    norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        torch._foreach_mul_(grads, scale)
    return norm


def _fused_adam_step(opt: torch.optim.Optimizer) -> bool:
    """The step of a fused `Adam` / `AdamW` from `make_optimizer` as the two calls
    `torch.optim` makes for it (`_foreach_add_` on the step counters, then the fused kernel), without
    its per-step wrappers (profiling context, hook checks, state gathering, grouping by device
    and dtype: ~30 us of a PPO minibatch step of ~900). Taken only where those wrappers would do
    nothing else: one parameter group on one device and dtype, every parameter with a gradient
    and an initialized state (the first step goes through `opt.step()`), no hooks, no amsgrad,
    maximize, capturable or differentiable, a float learning rate. Returns whether it stepped."""
    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW) or len(opt.param_groups) != 1:
        return False
    group = opt.param_groups[0]
    if (not group["fused"] or group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
            or isinstance(group["lr"], torch.Tensor) or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
            or _optim_module._global_optimizer_pre_hooks or _optim_module._global_optimizer_post_hooks
            or getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None):
        return False
    params, state = group["params"], opt.state
    try:
        states = [state[p] for p in params]
        exp_avgs, exp_avg_sqs, steps = ([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))
    except KeyError:  # a parameter without state yet
        return False
    grads = [p.grad for p in params]
    first = params[0]
    if any(g is None for g in grads) or any(p.device != first.device or p.dtype != first.dtype for p in params):
        return False
    beta1, beta2 = group["betas"]
    kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    with torch.no_grad():
        torch._foreach_add_(steps, 1)
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"], beta1=beta1,
               beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None,
               found_inf=None)
    opt._opt_called = True  # what the learning-rate scheduler's wrapper of `opt.step` records
    return True


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` (2-norm, the same 1e-6 guard) in five foreach calls, without
    its per-call grouping by device and dtype when every gradient shares one (PPO steps ~40 times
    per update on tiny MLPs, where that bookkeeping was a tenth of the update). Returns the norm."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype for g in grads):
        return nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))
    return total


def host_metrics(info: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """`update`'s metrics as host floats: every tensor in one stack and one device-to-host copy
    (one sync per update instead of one per metric)."""
    out = {k: float(v) for k, v in info.items() if not isinstance(v, torch.Tensor)}
    keys = [k for k, v in info.items() if isinstance(v, torch.Tensor)]
    if keys:
        out.update(zip(keys, torch.stack([info[k].detach().reshape(()).float() for k in keys]).tolist()))
    return out


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off, in eval mode: target networks and reference policies."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target.eval()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging of parameters: target <- (1 - tau) * target + tau * source.
    Buffers (e.g. normalizer statistics) are copied as they are."""
    targets, sources = list(target.parameters()), list(source.parameters())
    if targets:
        torch._foreach_lerp_(targets, sources, tau)  # one call for all tensors (what torch's optimizers use)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)
