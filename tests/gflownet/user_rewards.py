"""Rewards a user writes for the molecule envs (`env.kwargs.reward=tests.gflownet.user_rewards:<name>`)."""

import torch


def heavy_atoms(mols):
    """R(x) = number of heavy atoms / 10, as a list."""
    return [m.GetNumAtoms() / 10 for m in mols]


def oxygens(mols):
    """R(x) = 0.05 + number of oxygen atoms, as a Tensor."""
    return torch.tensor([0.05 + sum(a.GetSymbol() == "O" for a in m.GetAtoms()) for m in mols])


def one_short(mols):
    return [1.0] * (len(mols) - 1)


def with_nan(mols):
    return [float("nan")] * len(mols)


def negative(mols):
    return [-1.0] * len(mols)


def not_numbers(mols):
    return ["high"] * len(mols)


def exact(mols):
    """Values float32 cannot hold exactly, and a zero (allowed: R(x) >= 0)."""
    return [0.0, 0.1, 1 / 3, 2.0][: len(mols)]


NOT_CALLABLE = 3.0
