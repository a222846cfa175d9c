"""Trajectory encoders for attribution (Deshmukh et al. 2023, "Explaining RL Decisions with
Trajectories", section 3.1): a sequence model is trained on sub-trajectories of length L of
(state, action, reward) tokens; a trajectory's embedding is the mean of its sub-trajectory
embeddings.

* `LSTMAutoencoder`: an LSTM encodes the window, its last hidden state is the embedding, and an
  LSTM decoder reconstructs the window from it (sequence autoencoder, Srivastava et al. 2015).
* `CausalTrajectoryEncoder`: decision-transformer style (Chen et al. 2021): each step gives
  three tokens (s, a, r) with a timestep embedding, a causal transformer predicts a_t from the
  s_t token and r_t from the a_t token; the embedding is the mean final hidden state.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from rlx import kernels
from rlx.core.buffers import EpisodeStore
from rlx.core.transformer import Block, LMConfig

__all__ = ["step_features", "windows", "LSTMAutoencoder", "CausalTrajectoryEncoder", "ENCODERS",
           "train_encoder", "embed_trajectories"]


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


class LSTMAutoencoder(nn.Module):
    """Window [B, L, F] -> embedding [B, D] (encoder's hidden at the last valid step) -> LSTM
    decoder fed the embedding at every step -> reconstruction [B, L, F]; masked MSE."""

    def __init__(self, feat_dim: int, embed_dim: int, obs_dim: int, act_dim: int):
        super().__init__()
        del obs_dim, act_dim  # the autoencoder reconstructs every feature alike
        self.encoder = nn.LSTM(feat_dim, embed_dim, batch_first=True)
        self.decoder = nn.LSTM(embed_dim, embed_dim, batch_first=True)
        self.out = nn.Linear(embed_dim, feat_dim)

    def embed(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoder(x)  # [B, L, D]; causal, so padding after the last valid step cannot leak in
        last = valid.sum(1) - 1
        return h[torch.arange(x.shape[0]), last]

    def loss(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        z = self.embed(x, valid)
        h, _ = self.decoder(z[:, None, :].expand(-1, x.shape[1], -1))  # [B, D] -> [B, L, D]
        err = (self.out(h) - x).pow(2).mean(-1)
        return (err * valid).sum() / valid.sum()


class CausalTrajectoryEncoder(nn.Module):
    """Decision-transformer-style encoder: tokens (s_1, a_1, r_1, s_2, ...) [B, 3L, D], causal
    blocks; losses: a_t from the s_t token, r_t from the a_t token (masked MSE on features)."""

    def __init__(self, feat_dim: int, embed_dim: int, obs_dim: int, act_dim: int,
                 n_layer: int = 2, n_head: int = 2, max_len: int = 256):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        cfg = LMConfig(block_size=3 * max_len, n_layer=n_layer, n_head=n_head, d_model=embed_dim)
        self.max_len = max_len
        self.embed_s, self.embed_a = nn.Linear(obs_dim, embed_dim), nn.Linear(act_dim, embed_dim)
        self.embed_r = nn.Linear(1, embed_dim)
        self.timestep = nn.Embedding(max_len, embed_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_layer))
        self.ln = nn.LayerNorm(embed_dim)
        self.pred_a, self.pred_r = nn.Linear(embed_dim, act_dim), nn.Linear(embed_dim, 1)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        if L > self.max_len:
            raise ValueError(f"window length {L} exceeds the encoder's max_len={self.max_len}")
        s, a, r = x.split([self.obs_dim, self.act_dim, 1], -1)
        t = self.timestep(torch.arange(L))
        tok = torch.stack([self.embed_s(s) + t, self.embed_a(a) + t, self.embed_r(r) + t], 2)  # [B, L, 3, D]
        h = tok.reshape(B, 3 * L, -1)  # interleave: s_1, a_1, r_1, s_2, ...
        for block in self.blocks:
            h, _ = block(h, None)
        return self.ln(h).reshape(B, L, 3, -1)  # [B, 3L, D] -> [B, L, 3, D]

    def embed(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x).mean(2)  # [B, L, D], mean over the step's three tokens
        return (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)

    def loss(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        _, a, r = x.split([self.obs_dim, self.act_dim, 1], -1)
        err = (self.pred_a(h[:, :, 0]) - a).pow(2).mean(-1) + (self.pred_r(h[:, :, 1]) - r).pow(2).squeeze(-1)
        return (err * valid).sum() / valid.sum()


ENCODERS = {"lstm": LSTMAutoencoder, "transformer": CausalTrajectoryEncoder}


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
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=gen)
        loss = model.loss(x[idx], valid[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tail = max(len(losses) // 10, 1)
    info = {"loss/encoder_first": sum(losses[:tail]) / tail, "loss/encoder_last": sum(losses[-tail:]) / tail}
    return model, embed_trajectories(model, x, valid, wptr), info


@torch.no_grad()
def embed_trajectories(model: nn.Module, x: torch.Tensor, valid: torch.Tensor, wptr: torch.Tensor,
                       chunk: int = 4096) -> torch.Tensor:
    """Window embeddings averaged per trajectory (segment mean over the window ptr): [E, D]."""
    z = torch.cat([model.embed(x[i:i + chunk], valid[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    return kernels.segment_mean(z, wptr)
