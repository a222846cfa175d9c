"""Trajectory encoders for attribution (Deshmukh et al. 2023, "Explaining RL Decisions with
Trajectories", section 3.1): sequence models over sub-trajectories [B, L, F] of (state, action,
reward) features; `rlx.algos.traj_encoders` trains them and averages window embeddings per
trajectory.

* `LSTMAutoencoder`: an LSTM encodes the window, its last hidden state is the embedding, and an
  LSTM decoder reconstructs the window from it (sequence autoencoder, Srivastava et al. 2015).
* `CausalTrajectoryEncoder`: decision-transformer style (Chen et al. 2021): each step gives
  three tokens (s, a, r) with a timestep embedding, a causal transformer predicts a_t from the
  s_t token and r_t from the a_t token; the embedding is the mean final hidden state.
"""

from __future__ import annotations

import torch
from torch import nn

from rlx.models.transformer import Block, LMConfig

__all__ = ["LSTMAutoencoder", "CausalTrajectoryEncoder", "ENCODERS"]


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
