"""Atom-based molecule building for GFlowNets, batched and tensorized, with RDKit rewards.

State: a labeled graph of at most N heavy atoms, as a TensorDict `{"atoms": [B, N] int64`
(atom-type index, -1 = empty slot), `"bonds": [B, N, N] int64` (bond order 0..3)}`. Atoms
are numbered in the order they were added and every atom k >= 1 keeps a bond to an earlier
atom, so the graph is connected. Forward actions:
* stop;
* first atom of type t (empty graph only);
* add atom of type t bonded (single) to atom j;
* increment the order of the bond between atoms i < j (0 -> 1 closes a ring, 1 -> 2, 2 -> 3).
Masks keep every atom within its valence (C 4, N 3, O 2, F 1, ...; implicit hydrogens fill
the rest), so every terminal state is a neutral Kekule structure that RDKit sanitizes.

Ragged action layout of a graph with n atoms: [stop, first_0..first_{T-1}], then for each
atom j = 0..n-1 the block [add_{j,0..T-1}, pair_{0,j}, ..., pair_{j-1,j}]; the layout of n
atoms is a prefix of the layout of N atoms, so a local action index decodes the same way
for every graph. Steps, masks and parent counts are tensor ops; RDKit runs only to score
terminal molecules (with a SMILES-keyed cache).

Parents (uniform backward policy): with n >= 2 atoms, the parents of a graph are (a) remove
the last atom if it has one single bond, (b) delete a single bond (i, j), i < j, if atom j
keeps another bond to an earlier atom, (c) decrement a bond of order >= 2; a one-atom graph
has the empty graph as its only parent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from rlx.core.checkpoint import Saveable
from rlx.core.errors import EnvError

VALENCE = {"C": 4, "N": 3, "O": 2, "F": 1, "S": 2, "Cl": 1, "Br": 1, "P": 3}
DEFAULT_TARGETS = ("CC(=O)OCC", "O=C(O)c1ccccc1", "CCN(CC)CC")


class AtomMoleculeEnv(Saveable):
    """Batched atom-by-atom molecule builder (see the module docstring).

    reward: see `MoleculeReward` (qed, sa, mw, qed_sa_mw, similarity, seh, or `pkg.mod:func` on a list of
    RDKit Mols), raised to `reward_exponent`. log R = log max(R, r_min).
    A `rlx.envs.batched.BatchedEnv` with ragged action sets and no parent enumeration.
    """

    action_width = None  # the action set grows with the molecule
    policy_input = "atom_graph"  # GraphPolicy on graph_batch(states)
    has_parents = False
    has_backward_actions = False
    key_metric = "eval/top100_reward"

    def __init__(self, max_atoms: int = 9, atoms: Sequence[str] = ("C", "N", "O", "F"), reward: str = "qed_sa_mw",
                 targets: Sequence[str] = DEFAULT_TARGETS, mw_window: Sequence[float] = (60.0, 160.0),
                 r_min: float = 1e-3, min_atoms: int = 1, mode_threshold: float = 0.7, seh_path: str | None = None,
                 reward_exponent: float = 1.0):
        unknown = [a for a in atoms if a not in VALENCE]
        if unknown:
            raise ValueError(f"unknown atom types {unknown}; choose from {sorted(VALENCE)}")
        self.rewarder = MoleculeReward(reward, targets, mw_window, r_min, seh_path, reward_exponent)
        if not 1 <= min_atoms <= max_atoms:
            raise ValueError(f"need 1 <= min_atoms <= max_atoms, got {min_atoms}, {max_atoms}")
        self.N, self.atom_types, self.T = max_atoms, list(atoms), len(atoms)
        self.min_atoms, self.mode_threshold = min_atoms, mode_threshold
        self.max_valence = torch.tensor([VALENCE[a] for a in atoms])
        self.max_steps = 1 + (max_atoms - 1) + int(self.max_valence.max()) * max_atoms  # every step adds a bond order
        # the full layout for N atoms: kind (0 stop, 1 first, 2 add, 3 pair), a, b per entry
        kind, a, b = [0] + [1] * self.T, [0] + list(range(self.T)), [0] * (1 + self.T)
        for j in range(max_atoms):
            kind += [2] * self.T + [3] * j
            a += [j] * self.T + list(range(j))  # add: atom j / pair: atom i
            b += list(range(self.T)) + [j] * j  # add: type t / pair: atom j
        self.kind, self.arg_a, self.arg_b = torch.tensor(kind), torch.tensor(a), torch.tensor(b)
        self.block_start = 1 + self.T + torch.tensor([j * self.T + j * (j - 1) // 2 for j in range(max_atoms + 1)])

    # ---------------------------------------------------------------- states
    def reset(self, n: int) -> TensorDict:
        return TensorDict({"atoms": torch.full((n, self.N), -1, dtype=torch.int64),
                           "bonds": torch.zeros(n, self.N, self.N, dtype=torch.int64)}, batch_size=[n])

    def num_atoms(self, states: TensorDict) -> torch.Tensor:
        return (states["atoms"] >= 0).sum(1)

    def action_ptr(self, states: TensorDict) -> torch.Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.int64), self.block_start[self.num_atoms(states)].cumsum(0)])

    def _free_valence(self, states: TensorDict) -> torch.Tensor:
        atoms = states["atoms"]
        maxv = torch.where(atoms >= 0, self.max_valence[atoms.clamp_min(0)], 0)
        return maxv - states["bonds"].sum(2)  # [B, N]

    def forward_mask(self, states: TensorDict) -> torch.Tensor:
        """[K] bool over the ragged layout: True where the action keeps every valence legal."""
        n = self.num_atoms(states)
        free = self._free_valence(states)
        B, A = n.shape[0], self.kind.numel()
        kind, a, b = self.kind.expand(B, A), self.arg_a.expand(B, A), self.arg_b.expand(B, A)
        a, b = a.clamp_max(self.N - 1), b.clamp_max(self.N - 1)  # type indices of kinds 1, 2 may exceed N - 1
        free_a, free_b = free.gather(1, a), free.gather(1, b)
        order = states["bonds"].reshape(B, -1).gather(1, a * self.N + b)  # [B, A] order of pair (a, b)
        mask = torch.where(kind == 0, (n >= self.min_atoms)[:, None], False)
        mask |= (kind == 1) & (n == 0)[:, None]
        mask |= (kind == 2) & (n < self.N)[:, None] & (free_a >= 1)
        mask |= (kind == 3) & (order < 3) & (free_a >= 1) & (free_b >= 1)
        inside = torch.arange(A)[None] < self.block_start[n][:, None]  # [B, A] the prefix of n atoms
        return mask[inside]

    def step(self, states: TensorDict, actions: torch.Tensor) -> TensorDict:
        """Apply local actions [B] (indices into each graph's ragged layout)."""
        atoms, bonds = states["atoms"].clone(), states["bonds"].clone()
        n = self.num_atoms(states)
        kind, a, b = self.kind[actions], self.arg_a[actions], self.arg_b[actions]
        r = torch.nonzero(kind == 1).squeeze(-1)
        atoms[r, 0] = a[r]
        r = torch.nonzero(kind == 2).squeeze(-1)
        atoms[r, n[r]] = b[r]
        bonds[r, n[r], a[r]] = 1
        bonds[r, a[r], n[r]] = 1
        r = torch.nonzero(kind == 3).squeeze(-1)
        bonds[r, a[r], b[r]] += 1
        bonds[r, b[r], a[r]] += 1
        return TensorDict({"atoms": atoms, "bonds": bonds}, batch_size=states.batch_size)

    def is_stop(self, actions: torch.Tensor) -> torch.Tensor:
        return actions == 0

    def num_parents(self, states: TensorDict) -> torch.Tensor:
        """[B] parent count per the rules (a), (b), (c) of the module docstring."""
        bonds, n = states["bonds"], self.num_atoms(states)
        B = n.shape[0]
        earlier = torch.tril(torch.ones(self.N, self.N, dtype=torch.bool), -1)  # [j, i]: i < j
        earlier_nbrs = ((bonds > 0) & earlier).sum(2)  # [B, N] bonds of atom j to atoms i < j
        last = (n - 1).clamp_min(0)
        last_row = bonds[torch.arange(B), last]  # [B, N]
        remove_last = ((last_row > 0).sum(1) == 1) & (last_row.amax(1) == 1) & (n >= 2)
        single_ok = (bonds == 1) & earlier & (earlier_nbrs >= 2)[:, :, None]  # [B, j, i]
        higher = (bonds >= 2) & earlier
        count = remove_last.long() + single_ok.sum((1, 2)) + higher.sum((1, 2))
        return torch.where(n == 1, 1, count)

    # ---------------------------------------------------------------- graph view for MPNNs
    def graph_batch(self, states: TensorDict) -> dict[str, torch.Tensor]:
        """PyG-style flat graph: node types x [V], edge_index [2, 2E] (both directions),
        bond orders edge_attr [2E], node graph ids batch [V] (sorted), per-graph node ptr [B+1],
        and the flat positions in the ragged action layout of add / pair / graph-level actions."""
        atoms, bonds = states["atoms"], states["bonds"]
        n = self.num_atoms(states)
        g, slot = torch.nonzero(atoms >= 0, as_tuple=True)  # row-major: sorted by graph, then atom
        node_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
        eg, ei, ej = torch.nonzero(bonds > 0, as_tuple=True)
        edge_index = torch.stack([node_ptr[eg] + ei, node_ptr[eg] + ej])
        act_ptr = self.action_ptr(states)
        T = self.T
        add_pos = (act_ptr[g] + self.block_start[slot])[:, None] + torch.arange(T)  # [V, T]
        # pairs (i < j) of real atoms: flat position block_start[j] + T + i
        pj, pi = torch.nonzero(torch.tril(torch.ones(self.N, self.N, dtype=torch.bool), -1), as_tuple=True)
        pg = torch.arange(n.shape[0]).repeat_interleave(pj.numel())
        pj, pi = pj.repeat(n.shape[0]), pi.repeat(n.shape[0])
        real = pj < n[pg]
        pg, pi, pj = pg[real], pi[real], pj[real]
        return {"x": atoms[g, slot], "edge_index": edge_index, "edge_attr": bonds[eg, ei, ej], "batch": g,
                "node_ptr": node_ptr, "num_atoms": n, "act_ptr": act_ptr, "add_pos": add_pos,
                "pair_src": node_ptr[pg] + pi, "pair_dst": node_ptr[pg] + pj,
                "pair_pos": act_ptr[pg] + self.block_start[pj] + T + pi}

    # ---------------------------------------------------------------- chemistry
    def to_mol(self, atoms: torch.Tensor, bonds: torch.Tensor):
        """One state -> a sanitized RDKit Mol (raises if RDKit rejects it)."""
        from rdkit import Chem

        mol = Chem.RWMol()
        n = int((atoms >= 0).sum())
        for k in range(n):
            mol.AddAtom(Chem.Atom(self.atom_types[int(atoms[k])]))
        order = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
        for i, j in torch.nonzero(torch.triu(bonds[:n, :n], 1)).tolist():
            mol.AddBond(i, j, order[int(bonds[i, j])])
        mol = mol.GetMol()
        Chem.SanitizeMol(mol)
        return mol

    def smiles(self, states: TensorDict) -> list[str]:
        from rdkit import Chem

        return [Chem.MolToSmiles(self.to_mol(a, b)) for a, b in zip(states["atoms"], states["bonds"])]

    def reward_of_smiles(self, smiles: str) -> float:
        return self.rewarder.score(smiles)

    def log_reward(self, states: TensorDict) -> torch.Tensor:
        return self.rewarder.log_reward(self.smiles(states))

    def evaluate_sampler(self, learner, num_samples: int) -> dict[str, float]:
        """Molecule metrics of `num_samples` fresh samples of the learned policy (no exploration)."""
        _, terminal, _ = learner.sample(num_samples, epsilon=0.0)
        smiles = self.smiles(terminal)
        return {f"eval/{k}": v for k, v in molecule_metrics(smiles, [self.reward_of_smiles(s) for s in smiles],
                                                            self.mode_threshold).items()}


# ---------------------------------------------------------------------------- rewards


REWARDS = ("qed", "sa", "mw", "qed_sa_mw", "similarity", "seh")


def reward_label(reward: str) -> str:
    """The short name a reward gives its run: a built-in's name, or the function's of `pkg.mod:func`."""
    return reward.replace(":", ".").rsplit(".", 1)[-1] if ":" in reward else reward


def labelled_env_name(name: str, reward: str) -> str:
    """`env.name` of a molecule preset (`molecules_atom_qed_sa_mw`) with its reward part replaced by
    `reward`'s label (`molecules_atom_my_score`); a name not ending in a built-in reward is kept."""
    for builtin in sorted(REWARDS, key=len, reverse=True):
        if name.endswith("_" + builtin):
            return f"{name[: -len(builtin)]}{reward_label(reward)}"
    return name


def check_molecule_reward(env_cfg, cls: type) -> None:
    """For a molecule env class: `env.kwargs.reward=pkg.mod:func` is imported (one line if it is
    missing or not callable) and the run is filed under its name (`env.name` takes the reward's
    label in place of the preset's built-in one: runs/<algo>/molecules_atom_<func>/..., config.yaml)."""
    from rlx.envs.fragments import FragmentMoleculeEnv
    from rlx.envs.registry import import_object

    reward = env_cfg.kwargs.get("reward")
    if not (isinstance(reward, str) and issubclass(cls, (AtomMoleculeEnv, FragmentMoleculeEnv))):
        return
    if ":" in reward and not callable(import_object(reward)):
        raise EnvError(f"env.kwargs.reward={reward} is not callable; it must be func(mols: list[Mol]) -> list[float]")
    env_cfg.name = labelled_env_name(env_cfg.name, reward)


class MoleculeReward:
    """Scores molecules (SMILES, cached) for the molecule envs.

    `qed`, `sa` ((10 - SA score) / 9, RDKit Contrib SA_Score), `mw` (1 inside `mw_window`,
    exp(-distance / 20) outside), `qed_sa_mw` (their product, the non-sEH terms of the
    multi-objective sEH task), `similarity` (max Tanimoto of Morgan fingerprints to `targets`),
    `seh` (the pretrained sEH proxy of Bengio et al. 2021: the packaged weights, or `seh_path`; reward
    (max(0.1, score) / 8)^10, see `rlx.envs.seh_proxy`), or any `pkg.mod:func` with
    `func(mols: list[rdkit.Chem.Mol]) -> list[float] | Tensor [n]` (values >= 0, finite).
    The env's R(x) is that value to the power `exponent` (`env.kwargs.reward_exponent`);
    log R = log max(R, r_min)."""

    def __init__(self, reward: str = "qed_sa_mw", targets: Sequence[str] = DEFAULT_TARGETS,
                 mw_window: Sequence[float] = (60.0, 160.0), r_min: float = 1e-3, seh_path: str | None = None,
                 exponent: float = 1.0):
        self.fn = None
        if ":" in reward:
            from rlx.envs.registry import import_object

            self.fn = import_object(reward)
            if not callable(self.fn):
                raise ValueError(f"reward={reward!r} is not callable; it must be func(mols) -> list[float] [n]")
        elif reward not in REWARDS:
            raise ValueError(f"reward={reward!r}; choose one of {', '.join(REWARDS)} or a function 'pkg.mod:func'")
        if not (isinstance(exponent, (int, float)) and 0 < exponent < math.inf):
            raise ValueError(f"reward_exponent={exponent!r}: must be a positive number")
        self.name, self.label, self.exponent = reward, reward_label(reward), float(exponent)
        self.targets, self.mw_window, self.r_min = list(targets), tuple(mw_window), r_min
        if reward == "seh":  # the sEH reward has its own floor (0.1 / 8)^10; r_min must not cut above it
            self.r_min = min(r_min, ((0.1 / 8.0) ** 10) ** self.exponent)
        self.seh_path = seh_path
        self._cache: dict = {}
        self._target_fps = None
        self._proxy = None

    def score(self, smiles: str) -> float:
        """R(x) of one molecule given as SMILES (for seh: stems unknown, the proxy's atom-0 convention)."""
        return self.score_smiles([smiles])[0]

    def score_smiles(self, smiles: Sequence[str]) -> list[float]:
        """R(x) of molecules given as SMILES; the ones not cached yet are scored in one batch."""
        todo = list(dict.fromkeys(s for s in smiles if s not in self._cache))
        if todo:
            from rdkit import Chem

            mols = [Chem.MolFromSmiles(s) for s in todo]
            bad = [s for s, m in zip(todo, mols) if m is None]
            if bad:
                raise ValueError(f"SMILES {bad[0]!r} does not parse")
            self._cache.update(zip(todo, self.score_mols(mols)))
        return [self._cache[s] for s in smiles]

    def score_mols(self, mols, stems: Sequence[Sequence[int]] | None = None) -> list[float]:
        """R(x) of sanitized RDKit Mols; `stems` (open attachment atoms per mol) only feed the sEH proxy."""
        if self.fn is not None:
            values = self._call_user(mols)
        elif self.name == "seh":
            values = self.seh_proxy().reward(mols, stems)
        else:
            values = [self._score(m) for m in mols]
        return [float(v) ** self.exponent for v in values] if self.exponent != 1.0 else [float(v) for v in values]

    def _call_user(self, mols) -> list[float]:
        """The user's function on a batch, its return checked: n finite values >= 0 (the GFlowNet takes log R)."""
        out = self.fn(list(mols))
        try:
            values = torch.as_tensor(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise EnvError(f"reward {self.name} returned {type(out).__name__}; it must return a list of floats "
                           f"or a Tensor [n], one per molecule") from None
        if values.dim() != 1 or values.numel() != len(mols):
            raise EnvError(f"reward {self.name} returned shape {tuple(values.shape)} for {len(mols)} molecules; "
                           f"it must return one value per molecule ([{len(mols)}])")
        if not torch.isfinite(values).all():
            raise EnvError(f"reward {self.name} returned a non-finite value (NaN/inf) for "
                           f"{int((~torch.isfinite(values)).sum())} of {len(mols)} molecules")
        if (values < 0).any():
            raise EnvError(f"reward {self.name} returned a negative value ({float(values.min()):.4g}); a GFlowNet "
                           "samples in proportion to R(x) and takes log R, so R(x) must be >= 0 (shift or exp it)")
        return values.tolist()

    def seh_proxy(self):
        if self._proxy is None:
            from rlx.envs.seh_proxy import SEHProxy

            from rlx import data

            self._proxy = SEHProxy.load(self.seh_path or data.path(data.SEH_WEIGHTS))
        return self._proxy

    def log_reward(self, smiles: Sequence[str]) -> torch.Tensor:
        return torch.tensor(self.score_smiles(smiles), dtype=torch.float32).clamp_min(self.r_min).log()

    def _score(self, mol) -> float:
        from rdkit.Chem import QED, Descriptors

        if self.name == "similarity":
            return max(similarity_to(mol, self._targets()))
        terms = []
        if self.name in ("qed", "qed_sa_mw"):
            terms.append(QED.qed(mol))
        if self.name in ("sa", "qed_sa_mw"):
            from rdkit.Contrib.SA_Score import sascorer

            terms.append((10.0 - sascorer.calculateScore(mol)) / 9.0)
        if self.name in ("mw", "qed_sa_mw"):
            lo, hi = self.mw_window
            mw = Descriptors.MolWt(mol)
            terms.append(1.0 if lo <= mw <= hi else math.exp(-min(abs(mw - lo), abs(mw - hi)) / 20.0))
        return float(math.prod(terms))

    def _targets(self):
        if self._target_fps is None:
            from rdkit import Chem

            mols = [Chem.MolFromSmiles(s) for s in self.targets]
            bad = [s for s, m in zip(self.targets, mols) if m is None]
            if bad:
                raise ValueError(f"target SMILES {bad} do not parse; give valid SMILES in env.kwargs.targets")
            self._target_fps = [fingerprint(m) for m in mols]
        return self._target_fps


# ---------------------------------------------------------------------------- metrics


def fingerprint(mol):
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048).GetFingerprint(mol)


def similarity_to(mol, fps) -> list[float]:
    from rdkit import DataStructs

    return DataStructs.BulkTanimotoSimilarity(fingerprint(mol), fps)


def molecule_metrics(smiles: Sequence[str | None], rewards: Sequence[float], threshold: float,
                     max_similarity: float = 0.7) -> dict[str, float]:
    """validity, uniqueness, top-10/100/1000 mean reward of unique molecules, number of modes
    (reward > threshold and Tanimoto < max_similarity to every earlier mode, in sampling order)
    and the mean pairwise Tanimoto similarity of the top 100 unique molecules."""
    from rdkit import Chem, DataStructs

    valid = [(s, r) for s, r in zip(smiles, rewards) if s is not None and Chem.MolFromSmiles(s) is not None]
    best: dict[str, float] = {}
    for s, r in valid:
        best[s] = r
    out = {"validity": len(valid) / max(len(smiles), 1), "uniqueness": len(best) / max(len(valid), 1),
           "num_unique": float(len(best))}
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    for k in (10, 100, 1000):
        out[f"top{k}_reward"] = float(sum(r for _, r in ranked[:k]) / max(min(k, len(ranked)), 1))
    mode_fps: list = []
    seen: set[str] = set()
    for s, r in valid:
        if r > threshold and s not in seen:
            seen.add(s)
            fp = fingerprint(Chem.MolFromSmiles(s))
            if not mode_fps or max(DataStructs.BulkTanimotoSimilarity(fp, mode_fps)) < max_similarity:
                mode_fps.append(fp)
    out["num_modes"] = float(len(mode_fps))
    top = [fingerprint(Chem.MolFromSmiles(s)) for s, _ in ranked[:100]]
    sims = [x for i in range(1, len(top)) for x in DataStructs.BulkTanimotoSimilarity(top[i], top[:i])]
    out["top100_similarity"] = float(sum(sims) / len(sims)) if sims else 0.0
    return out


__all__ = ["AtomMoleculeEnv", "MoleculeReward", "check_molecule_reward", "labelled_env_name", "reward_label", "molecule_metrics", "fingerprint", "similarity_to", "VALENCE", "REWARDS"]
