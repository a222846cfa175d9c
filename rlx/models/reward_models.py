"""Learned reward models r(prompt, response) of the text tasks (`rlx.envs.text` trains one
per task on its preference pairs with the Bradley-Terry loss)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BagRewardModel"]


class BagRewardModel(nn.Module):
    """r(prompt, response): an MLP on [mean word embedding, domain embedding, length / T]; the
    gold scorers are functions of exactly these statistics, so it can fit them from pairs."""

    def __init__(self, vocab: int, response_len: int, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.emb, self.dom = nn.Embedding(vocab, dim), nn.Embedding(vocab, dim)
        self.T = response_len
        self.mlp = nn.Sequential(nn.Linear(2 * dim + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        words = mask & (response != 3)  # <eos> is id 3
        n = words.sum(1, keepdim=True).float()
        bag = (self.emb(response) * words[..., None]).sum(1) / n.clamp_min(1)  # [B, dim]
        x = torch.cat([bag, self.dom(prompt[:, 1]), n / self.T], -1)
        return self.mlp(x).squeeze(-1)
