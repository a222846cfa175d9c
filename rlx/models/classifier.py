"""`DigitClassifier`: the image classifier behind DDPO's prompt-alignment reward
(`rlx.envs.image_rewards.alignment`, which trains and caches it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlx.models.diffusion import NUM_CLASSES

__all__ = ["DigitClassifier"]


class DigitClassifier(nn.Module):
    """Average-pool to 8x8 (the digits' native resolution), then an MLP over the 64 pixels."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, NUM_CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(F.adaptive_avg_pool2d(images, 8).flatten(1))  # [N, 1, S, S] -> [N, 64] -> [N, 10]
