"""`fit`: the one supervised fitting loop of rlx, for every auxiliary model a task or learner
pretrains (SFT policy, reward models, the digit classifier, the DDPM base model, trajectory
encoders). It steps through the shared optimizer path (`make_optimizer`: fused Adam/AdamW;
`optimizer_step`: zero_grad -> backward -> data-parallel averaging -> clipping -> step), so no
module keeps a private optimizer loop.

    losses = fit(model, lambda step: loss_of(next_batch()), steps=400, lr=3e-3, schedule="linear")

`loss_fn(step)` draws its own batch (from its own generator, so seeded data order is the
caller's) and returns the scalar loss; `fit` returns the loss of every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from rlx.core.learner import make_optimizer, optimizer_step, soft_update

__all__ = ["SCHEDULES", "fit"]

# learning-rate multiplier at step i of n
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda i, n: 1.0,
    "linear": lambda i, n: 1 - i / n,  # to 0 at the last step
    "cosine": lambda i, n: 0.5 * (1 + math.cos(math.pi * min(i / n, 1))),  # half a cosine to 0
}


def fit(target: nn.Module | Iterable[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float, *,
        weight_decay: float = 0.0, schedule: str = "constant", max_grad_norm: float = 0.0,
        ema: nn.Module | None = None, ema_decay: float = 0.999,
        callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Minimise `loss_fn(step)` for `steps` steps (step = 0 .. steps - 1) with Adam (AdamW when
    `weight_decay` > 0) at `lr` times the `schedule` multiplier, clipping the global gradient norm
    to `max_grad_norm` when > 0. `ema` (a copy of the module `target`) tracks the weights as
    ema <- ema_decay * ema + (1 - ema_decay) * weights after every step. `callback(step, loss)`
    runs after each step (progress lines). Returns the per-step losses."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if ema is not None and not isinstance(target, nn.Module):
        raise ValueError("ema needs the module itself as target, not a parameter list")
    if steps == 0:
        return []
    params = [p for p in (target.parameters() if isinstance(target, nn.Module) else target) if p.requires_grad]
    opt = make_optimizer(params, lr, weight_decay=weight_decay)
    multiplier = SCHEDULES[schedule]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: multiplier(i, steps)) if schedule != "constant" else None
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        optimizer_step(opt, loss, params, max_grad_norm)
        if sched is not None:
            sched.step()
        if ema is not None:
            soft_update(ema, target, 1 - ema_decay)
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    return losses
