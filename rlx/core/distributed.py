"""Data-parallel learners with `torch.distributed` (docs/architecture.md section 8).

Started by `torchrun --nproc_per_node=K -m rlx.train ... trainer.distributed=ddp`. Every rank
builds the same learner; rank 0's parameters are broadcast once; each rank collects or
samples its own shard of data (per-rank seeds); `rlx.core.learner.optimizer_step` averages
gradients across ranks after every backward, so K ranks with batch B each take the same
step as one process with the combined batch K*B (for losses that are batch means). Only
rank 0 writes logs, checkpoints and summaries. CPU uses the gloo backend, CUDA uses NCCL.

We average gradients ourselves instead of wrapping modules in `DistributedDataParallel`:
learners own several networks and optimizers (actor, critics, targets) and call them in
arbitrary orders, which DDP's single-forward bucketing does not fit, while one all-reduce
per optimizer step works for every learner unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    if dist.is_initialized():
        return
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"trainer.distributed=ddp needs torchrun's environment ({', '.join(missing)} unset); "
                           "start with: torchrun --nproc_per_node=2 -m rlx.train ... trainer.distributed=ddp")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)


def average_gradients(params) -> None:
    """All-reduce the gradients of `params` to their mean over ranks (one flat buffer)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s Python object on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def first_on_any_rank(item: Any) -> tuple[int, Any] | None:
    """(rank, item) of the lowest rank whose `item` is not None, on every rank; None when no
    rank has one. One one-element all-reduce per call; objects are gathered only when found."""
    if not is_distributed():
        return None if item is None else (0, item)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([float(item is not None)], device=device)
    dist.all_reduce(flag)
    if not flag.item():
        return None
    found = all_gather_object(item)
    first = next(r for r, x in enumerate(found) if x is not None)
    return first, found[first]


def sync_learner(learner) -> None:
    """Give every rank rank 0's learner state (parameters, optimizer, normalizers)."""
    if is_distributed():
        learner.load_state_dict(broadcast_object(learner.state_dict() if is_main() else None))
