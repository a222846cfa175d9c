"""Trajectory embeddings for attribution (Deshmukh et al. 2023, "Explaining RL Decisions with
Trajectories", section 3.1): a sequence model (`rlx.models.traj_encoders`: LSTM autoencoder or
decision-transformer-style encoder) is trained on sub-trajectories of length L of
(state, action, reward) tokens; a trajectory's embedding is the mean of its sub-trajectory
embeddings.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from rlx import kernels
from rlx.core.buffers import EpisodeStore
from rlx.core.fit import fit
from rlx.models.traj_encoders import ENCODERS

__all__ = ["step_features", "windows", "train_encoder", "embed_trajectories"]


def step_features(store: EpisodeStore, action_space: gym.Space) -> tuple[torch.Tensor, int, int]:
    """Per-row token features [M, obs_dim + act_dim + 1] = (standardized obs, action (one-hot when
    discrete, scaled to [-1, 1] when Box), standardized reward); returns (features, obs_dim, act_dim)."""
    obs = store.data["obs"].float().flatten(1)
    obs = (obs - obs.mean(0)) / obs.std(0).clamp_min(1e-3)
    if isinstance(action_space, gym.spaces.Discrete):
        act = F.one_hot(store.data["action"].long().reshape(-1), int(action_space.n)).float()
    elif isinstance(action_space, gym.spaces.Box):
        low = torch.as_tensor(action_space.low, dtype=torch.float32).flatten()
        high = torch.as_tensor(action_space.high, dtype=torch.float32).flatten()
        act = 2 * (store.data["action"].float().flatten(1) - low) / (high - low) - 1
    else:
        raise ValueError(f"trajectory encoders need a Discrete or Box action space, got {action_space}")
    rew = store.data["reward"].float().reshape(-1, 1)
    rew = (rew - rew.mean()) / rew.std().clamp_min(1e-3)
    return torch.cat([obs, act, rew], -1), obs.shape[1], act.shape[1]


def windows(ptr: torch.Tensor, length: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-trajectories of `length` rows every `stride` rows of each episode (the last one
    aligned to the episode end; an episode shorter than `length` gives one padded window).
    Returns (row index [W, length], valid mask [W, length], window ptr [E+1] grouping windows
    by episode)."""
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length}, {stride}")
    n = ptr[1:] - ptr[:-1]  # [E] episode lengths
    per_ep = 1 + ((n - length).clamp_min(0) + stride - 1) // stride  # [E] windows per episode
    wptr = kernels.lengths_to_ptr(per_ep)
    total = int(wptr[-1])
    ep = kernels.ptr_to_segment_ids(wptr, total)  # [W] episode of each window
    k = torch.arange(total) - wptr[ep]
    start = ptr[ep] + torch.minimum(k * stride, (n[ep] - length).clamp_min(0))
    offs = torch.arange(length)
    valid = offs[None, :] < n[ep, None]  # [W, L]
    rows = torch.minimum(start[:, None] + offs[None, :], ptr[ep + 1, None] - 1)  # padded slots repeat the last row
    return rows, valid, wptr


def train_encoder(store: EpisodeStore, action_space: gym.Space, kind: str = "lstm", window: int = 8,
                  stride: int = 2, embed_dim: int = 32, steps: int = 500, batch_size: int = 128, lr: float = 1e-3,
                  seed: int = 0) -> tuple[nn.Module, torch.Tensor, dict[str, float]]:
    """Fit an encoder on all windows of the store; returns (encoder, trajectory embeddings [E, D],
    {"loss/encoder_first", "loss/encoder_last"})."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder={kind!r}; choose one of {', '.join(ENCODERS)}")
    torch.manual_seed(seed)
    feats, obs_dim, act_dim = step_features(store, action_space)
    rows, valid, wptr = windows(store.ptr, window, stride)
    x = feats[rows]  # [W, L, F]
    model = ENCODERS[kind](feats.shape[1], embed_dim, obs_dim, act_dim)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=gen)
        return model.loss(x[idx], valid[idx])

    losses = fit(model, loss_fn, steps, lr)
    tail = max(len(losses) // 10, 1)
    info = {"loss/encoder_first": sum(losses[:tail]) / tail, "loss/encoder_last": sum(losses[-tail:]) / tail}
    return model, embed_trajectories(model, x, valid, wptr), info


@torch.no_grad()
def embed_trajectories(model: nn.Module, x: torch.Tensor, valid: torch.Tensor, wptr: torch.Tensor,
                       chunk: int = 4096) -> torch.Tensor:
    """Window embeddings averaged per trajectory (segment mean over the window ptr): [E, D]."""
    z = torch.cat([model.embed(x[i:i + chunk], valid[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    return kernels.segment_mean(z, wptr)
