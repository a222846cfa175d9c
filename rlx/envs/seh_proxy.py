"""The pretrained sEH binding proxy of Bengio et al. 2021 (GFlowNet molecule experiments), re-implemented.

An atom-graph MPNN (Gilmer et al. 2017) trained by the GFlowNet authors to predict a normalized
AutoDock Vina score against soluble epoxide hydrolase (PDB 4JNC) of fragment-built molecules:
score = 4 - (min(0, vina) + 8.6) / 1.10 (higher is better; ~0..8+). The published reward is
R = (max(0.1, score) / 8)^10.

Architecture (facts from the authors' description, our code):
* atom features [V, 71]: one-hot type H/C/N/O/F/other (6), a zero column, acceptor and donor
  (both 0: the proxy was trained without them), aromatic, sp / sp2 / sp3, total hydrogens,
  one-hot atomic number 1..56, and a stem flag (open attachment atoms; with none, atom 0);
* bond features [E, 4]: one-hot single / double / triple / aromatic, both directions; a
  molecule without bonds gets one self-loop on atom 0 with zero features;
* the network (MPNN + Set2Set readout, fixed published weights from `seh_proxy_params.npz`)
  is `rlx.models.seh_proxy.SEHProxyNet`; this module builds its atom graphs from RDKit
  molecules and turns its scores into rewards (`SEHProxy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from rlx import kernels
from rlx.models.seh_proxy import SEHProxyNet, load_params

NUM_ATOM_FEATURES = 71
_TYPE = {"H": 0, "C": 1, "N": 2, "O": 3, "F": 4}


def atom_graph(mol, stems: Sequence[int] | None = None, stem_flag: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [V, 71] float64, edge_index [2, 2E], edge_attr [2E, 4] float64) of a sanitized Mol.
    The stem column marks `stems` (atom 0 when there are none, the original convention), or
    nothing with `stem_flag=False` (the convention of later re-uses of the proxy)."""
    from rdkit.Chem.rdchem import BondType, HybridizationType

    V = mol.GetNumAtoms()
    x = np.zeros((V, NUM_ATOM_FEATURES))
    for i, atom in enumerate(mol.GetAtoms()):
        z = atom.GetAtomicNum()
        if not 1 <= z <= 56:
            raise ValueError(f"the sEH proxy featurizes atomic numbers 1..56, got {atom.GetSymbol()}")
        x[i, _TYPE.get(atom.GetSymbol(), 5)] = 1
        x[i, 9] = atom.GetIsAromatic()
        hyb = atom.GetHybridization()
        x[i, 10:13] = [hyb == HybridizationType.SP, hyb == HybridizationType.SP2, hyb == HybridizationType.SP3]
        x[i, 13] = atom.GetTotalNumHs(includeNeighbors=True)
        x[i, 14 + z - 1] = 1
    if stem_flag:
        x[list(stems) if stems else [0], 70] = 1
    kinds = {BondType.SINGLE: 0, BondType.DOUBLE: 1, BondType.TRIPLE: 2, BondType.AROMATIC: 3}
    pairs = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), kinds[b.GetBondType()]) for b in mol.GetBonds()]
    if not pairs:
        return torch.from_numpy(x), torch.zeros(2, 1, dtype=torch.int64), torch.zeros(1, 4, dtype=torch.float64)
    a, b, k = (torch.tensor(v) for v in zip(*pairs))
    attr = F.one_hot(k, 4).double()
    return torch.from_numpy(x), torch.stack([torch.cat([a, b]), torch.cat([b, a])]), torch.cat([attr, attr])


class SEHProxy:
    """`SEHProxy.load(path)(mols, stems) -> scores [B]`; `reward(...)` gives (max(0.1, s) / 8)^10."""

    def __init__(self, params: list[np.ndarray], root_transposed: bool = False, stem_flag: bool = True, steps: int = 12):
        self.net = SEHProxyNet(params, root_transposed, steps)
        self.stem_flag = stem_flag

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> SEHProxy:
        return cls(load_params(path), **kwargs)

    @torch.no_grad()
    def __call__(self, mols: Sequence, stems: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """Normalized docking-score predictions [B] (float64) for sanitized RDKit Mols."""
        graphs = [atom_graph(m, stems[i] if stems is not None else None, self.stem_flag) for i, m in enumerate(mols)]
        sizes = torch.tensor([g[0].shape[0] for g in graphs])
        ptr = kernels.lengths_to_ptr(sizes)
        x = torch.cat([g[0] for g in graphs])
        edge_index = torch.cat([g[1] + ptr[i] for i, g in enumerate(graphs)], 1)
        edge_attr = torch.cat([g[2] for g in graphs])
        return self.net(x, edge_index, edge_attr, ptr)

    def reward(self, mols: Sequence, stems: Sequence[Sequence[int]] | None = None) -> list[float]:
        return ((self(mols, stems).clamp_min(0.1) / 8.0) ** 10).tolist()


__all__ = ["SEHProxy", "atom_graph", "NUM_ATOM_FEATURES"]
