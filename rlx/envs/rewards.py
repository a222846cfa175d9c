"""Reward transforms for reward-ablation studies (Li et al. 2023, "Survival Instinct in
Offline RL", section 4): the agent trains on a transformed reward, evaluation always
reports the environment's true return. Terminals and timeouts are never touched.

modes: original r | zero 0 | random U[low, high) (seeded, one draw per transition, fixed
for the whole run) | negative -r; then the affine map `scale * r' + shift`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.core.ranges import nonneg, one_of

MODES = ("original", "zero", "random", "negative")


@dataclass
class RewardConfig:
    """How training rewards are derived from the dataset's/env's rewards."""

    mode: str = one_of("original", ("original", "zero", "random", "negative"))  # original | zero | random | negative
    scale: float = 1.0  # multiply after the mode is applied
    shift: float = 0.0  # add after scaling
    low: float = 0.0  # random mode: lower bound of the uniform draw (the paper uses [0, 1])
    high: float = 1.0  # random mode: upper bound
    seed: int = nonneg(0)  # random mode: seed of the draw (independent of the run seed)


def transform_rewards(reward: torch.Tensor, cfg: RewardConfig) -> torch.Tensor:
    """A new reward tensor of the same shape and dtype; the input is not modified."""
    import torch  # here: the CLI reads RewardConfig without importing torch

    if cfg.mode not in MODES:
        raise ValueError(f"unknown reward.mode={cfg.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.mode == "original":
        out = reward.clone()
    elif cfg.mode == "zero":
        out = torch.zeros_like(reward)
    elif cfg.mode == "negative":
        out = -reward
    else:
        if not cfg.high > cfg.low:
            raise ValueError(f"reward.high ({cfg.high}) must exceed reward.low ({cfg.low}) for mode=random")
        gen = torch.Generator().manual_seed(cfg.seed)
        u = torch.rand(reward.shape, generator=gen, dtype=torch.float64)
        out = (cfg.low + (cfg.high - cfg.low) * u).to(reward.dtype).to(reward.device)
    return out * cfg.scale + cfg.shift if (cfg.scale != 1.0 or cfg.shift != 0.0) else out
