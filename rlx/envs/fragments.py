"""Fragment-based molecule building for GFlowNets (Bengio et al. 2021, section 4.2), batched.

A fragment library row is (name, SMILES, stems): `stems` are atom indices of the fragment (in
SMILES parse order) that carry a hydrogen which a single bond to another fragment may replace;
an atom may appear more than once (it then has that many attachment points). The *first* stem
is the atom a fragment bonds with when it is attached to a molecule; the others become open
stems of the molecule. The first fragment of a molecule opens all its stems.

State: a tree of at most `max_blocks` fragments as a TensorDict
`{"blocks": [B, Nb]` fragment index (-1 empty), `"parent": [B, Nb]` block it is attached to
(-1 root / empty), `"slot": [B, Nb]` stem slot of the parent it took (-1 root / empty),
`"open": [B, Nb, R] bool` open stem slots (R = the longest stem list)`}`.
Actions (ragged, per state): `0` stop; with no fragment yet `1 + f` places fragment f; else
`1 + k * L + f` attaches fragment f at the k-th open stem (open slots in (block, slot)
row-major order). Masks: stop needs `min_blocks` fragments; attaching needs fewer than
`max_blocks` and must not reach a state that can neither stop nor grow (fewer than
`min_blocks` fragments and no open stem). The bond is single and both atoms give up a
hydrogen, and `validate_library` checks every atom has at least as many hydrogens as stems,
so every molecule the masks allow sanitizes.

Backward policy (uniform): the parents of a state with n >= 2 fragments are the states
without one of its leaf fragments other than the root (a state is the rooted tree, whatever
the order its fragments were added in); a one-fragment state has the empty state as parent.
As in the original work a molecule can be built as several trees (another root fragment,
or a duplicate stem atom), so the GFlowNet samples trees, not molecules, proportionally to R.

Default library: RDKit BRICS fragments of `DEFAULT_MOLECULES` (a few known drugs), one row
per (fragment, first stem); `library=<path>` loads a JSON (pandas "columns" orient or a list
of records) or CSV file with columns block_name, block_smi, block_r, e.g. the 105-block file
of the original paper.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict import TensorDict

from rlx.core.checkpoint import Saveable
from rlx.envs.molecules import DEFAULT_TARGETS, MoleculeReward, molecule_metrics

# Known drugs whose BRICS fragments form the default library (SMILES from their public records).
DEFAULT_MOLECULES = (
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",  # ibuprofen
    "Cn1c(=O)c2c(ncn2C)n(C)c1=O",  # caffeine
    "CN1CCC[C@H]1c1cccnc1",  # nicotine
    "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",  # melatonin
    "CN(C)CCCN1c2ccccc2CCc2ccccc21",  # imipramine
    "O=C(O)c1ccccc1Nc1cccc(C(F)(F)F)c1",  # flufenamic acid
    "CC(C)NCC(O)COc1ccc(CC(N)=O)cc1",  # atenolol
    "Cc1ccc(S(=O)(=O)NC(=O)NN2CCCCCC2)cc1",  # tolazamide
    "O=C(NC1CCCCC1)NC12CC3CC(CC(C3)C1)C2",  # an adamantyl urea sEH inhibitor (ACU)
    "CN1CCN(CC1)c1ccc(NC(=O)c2ccc(Cl)cc2)cc1",  # a piperazine anilide
    "Clc1ccc(cc1)C(c1ccccc1)N1CCNCC1",  # norchlorcyclizine
    "COc1ccc(cc1)C(=O)N1CCOCC1",  # a morpholine amide
    "Nc1ncnc2[nH]cnc12",  # adenine
    "O=c1cc[nH]c(=O)[nH]1",  # uracil
    "c1ccc2c(c1)sc1ccccc12",  # dibenzothiophene
    "OCC1OC(O)C(O)C(O)C1O",  # glucose
)

COLUMNS = ("block_name", "block_smi", "block_r")


@dataclass
class FragmentLibrary:
    names: list[str]
    smiles: list[str]
    stems: list[list[int]]

    def __len__(self) -> int:
        return len(self.names)


def load_fragment_library(path: str | Path) -> FragmentLibrary:
    """Read a library file (JSON columns/records or CSV) with columns block_name, block_smi, block_r, or a
    packaged library by name (`PDB_105`: the 105-block library of Bengio et al. 2021, see `rlx.data`)."""
    from rlx import data

    path = data.path(data.FRAGMENT_LIBRARIES[str(path)]) if str(path) in data.FRAGMENT_LIBRARIES else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fragment library {path} not found")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {c: [r.get(c) for r in rows] for c in (rows[0].keys() if rows else [])}
    else:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"fragment library {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, list):  # records
            columns = {c: [r.get(c) for r in data] for c in (data[0].keys() if data else [])}
        elif isinstance(data, dict):  # pandas "columns" orient: {column: {row: value}}
            columns = {c: list(v.values()) if isinstance(v, dict) else list(v) for c, v in data.items()}
        else:
            raise ValueError(f"fragment library {path}: expected a JSON object or list, got {type(data).__name__}")
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"fragment library {path}: missing column(s) {missing}; need {list(COLUMNS)}")
    stems = [json.loads(r) if isinstance(r, str) else r for r in columns["block_r"]]
    lib = FragmentLibrary([str(n) for n in columns["block_name"]], [str(s) for s in columns["block_smi"]],
                          [[int(a) for a in r] for r in stems])
    validate_library(lib, str(path))
    return lib


def validate_library(lib: FragmentLibrary, source: str = "library") -> None:
    """Every SMILES parses, every fragment has a stem, and the fragment with a methyl on every
    stem at once (the most bonds its atoms can ever get) sanitizes."""
    from rdkit import Chem

    if len(lib) == 0:
        raise ValueError(f"fragment {source} is empty")
    for name, smi, stems in zip(lib.names, lib.smiles, lib.stems):
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise ValueError(f"fragment {source}: {name}: SMILES {smi!r} does not parse")
        if not stems:
            raise ValueError(f"fragment {source}: {name}: no stems (block_r is empty)")
        bad = [a for a in stems if not 0 <= a < mol.GetNumAtoms()]
        if bad:
            raise ValueError(f"fragment {source}: {name}: stem atoms {bad} outside 0..{mol.GetNumAtoms() - 1}")
        capped = Chem.RWMol(mol)
        for a in stems:
            c = capped.AddAtom(Chem.Atom(6))
            _bond_replacing_h(capped, a, c)
        try:
            Chem.SanitizeMol(capped)
        except Exception as e:  # RDKit raises several types for valence / kekulization errors
            raise ValueError(f"fragment {source}: {name}: {len(stems)} stems on {smi} do not fit its valences "
                             f"({type(e).__name__})") from None


def _bond_replacing_h(mol, a: int, b: int) -> None:
    """Single bond a-b on an RWMol; an atom with explicit hydrogens ([nH], [NH3+]) gives one up."""
    from rdkit import Chem

    mol.AddBond(a, b, Chem.BondType.SINGLE)
    for idx in (a, b):
        atom = mol.GetAtomWithIdx(idx)
        if atom.GetNumExplicitHs() > 0:
            atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)


def brics_library(molecules: Sequence[str] = DEFAULT_MOLECULES, max_atoms: int = 12) -> FragmentLibrary:
    """BRICS fragments (RDKit) of `molecules`: each cut bond's dummy atom becomes a hydrogen and
    its neighbour a stem; one row per distinct first stem. Fragments over `max_atoms` heavy atoms
    are dropped."""
    from rdkit import Chem
    from rdkit.Chem import BRICS

    frags: set[str] = set()
    for smi in molecules:
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise ValueError(f"molecule {smi!r} does not parse")
        frags |= set(BRICS.BRICSDecompose(mol, keepNonLeafNodes=False))
    lib, seen = FragmentLibrary([], [], []), set()
    for frag in sorted(frags):
        mol = Chem.RWMol(Chem.MolFromSmiles(frag))
        dummies = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() == 0]
        if not dummies:
            continue
        marked = []
        for d in dummies:
            nbr = mol.GetAtomWithIdx(d).GetNeighbors()[0]
            marked.append(nbr.GetIdx())
            nbr.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
            if nbr.GetNoImplicit() or (nbr.GetIsAromatic() and nbr.GetSymbol() != "C"):  # [C@H], aromatic n:
                nbr.SetNumExplicitHs(nbr.GetNumExplicitHs() + 1)  # the hydrogen must be written out
        for i, a in enumerate(mol.GetAtoms()):
            a.SetIntProp("orig", i)
        for d in sorted(dummies, reverse=True):
            mol.RemoveAtom(d)
        mol = mol.GetMol()
        Chem.SanitizeMol(mol)
        if mol.GetNumAtoms() > max_atoms:
            continue
        smi = Chem.MolToSmiles(mol)
        order = [int(i) for i in mol.GetProp("_smilesAtomOutputOrder").strip("[],").split(",") if i]
        new_index = {mol.GetAtomWithIdx(old).GetIntProp("orig"): new for new, old in enumerate(order)}
        stems = sorted(new_index[m] for m in marked)
        for first in sorted(set(stems)):
            rest = list(stems)
            rest.remove(first)
            if (smi, first, tuple(rest)) in seen:  # the same fragment cut out of another molecule
                continue
            seen.add((smi, first, tuple(rest)))
            lib.names.append(f"{smi}_{first}" + "".join(f",{a}" for a in rest))
            lib.smiles.append(smi)
            lib.stems.append([first] + rest)
    validate_library(lib, "BRICS library")
    return lib


class FragmentMoleculeEnv(Saveable):
    """Batched fragment-by-fragment molecule builder (see the module docstring).

    library: a path or a packaged library name (`PDB_105`, see `load_fragment_library`) or None for the
    BRICS default; reward and its
    options as in `rlx.envs.molecules.MoleculeReward` (`seh` is the usual fragment task; `pkg.mod:func` a
    function of a list of RDKit Mols; `reward_exponent` raises R to a power). A
    `rlx.envs.batched.BatchedEnv` with ragged action sets and no parent enumeration."""

    action_width = None  # the action set grows with the open stems
    policy_input = "fragment_graph"  # FragmentPolicy on graph_batch(states)
    has_parents = False
    has_backward_actions = False
    key_metric = "eval/top100_reward"

    def __init__(self, library: str | None = None, max_blocks: int = 8, min_blocks: int = 2, reward: str = "qed_sa_mw",
                 targets: Sequence[str] = DEFAULT_TARGETS, mw_window: Sequence[float] = (200.0, 500.0),
                 r_min: float = 1e-3, mode_threshold: float = 0.5, seh_path: str | None = None,
                 reward_exponent: float = 1.0):
        if not 1 <= min_blocks <= max_blocks:
            raise ValueError(f"need 1 <= min_blocks <= max_blocks, got {min_blocks}, {max_blocks}")
        self.lib = load_fragment_library(library) if library else brics_library()
        self.rewarder = MoleculeReward(reward, targets, mw_window, r_min, seh_path, reward_exponent)
        self.Nb, self.min_blocks, self.mode_threshold = max_blocks, min_blocks, mode_threshold
        self.L = len(self.lib)
        self.R = max(len(s) for s in self.lib.stems)
        self.num_stems = torch.tensor([len(s) for s in self.lib.stems])  # [L] stems as first fragment
        self.stem_offset = torch.cat([torch.zeros(1, dtype=torch.int64), self.num_stems.cumsum(0)])  # [L + 1]
        self.num_stem_types = int(self.stem_offset[-1])  # one id per (fragment, slot), for embeddings
        self.max_steps = max_blocks
        self._mols = None

    # ---------------------------------------------------------------- states
    def reset(self, n: int) -> TensorDict:
        full = torch.full((n, self.Nb), -1, dtype=torch.int64)
        return TensorDict({"blocks": full, "parent": full.clone(), "slot": full.clone(),
                           "open": torch.zeros(n, self.Nb, self.R, dtype=torch.bool)}, batch_size=[n])

    def num_blocks(self, states: TensorDict) -> torch.Tensor:
        return (states["blocks"] >= 0).sum(1)

    def _sizes(self, states: TensorDict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.num_blocks(states)
        n_open = states["open"].flatten(1).sum(1)
        n_attach = torch.where(n < self.Nb, n_open, 0)  # open stems that can take a fragment
        size = 1 + self.L * torch.where(n == 0, 1, n_attach)  # stop, then L per first placement / open stem
        return n, n_attach, size

    def action_ptr(self, states: TensorDict) -> torch.Tensor:
        return torch.cat([torch.zeros(1, dtype=torch.int64), self._sizes(states)[2].cumsum(0)])

    def forward_mask(self, states: TensorDict) -> torch.Tensor:
        """[K] bool over the ragged layout (stop, then L per first placement or per open stem)."""
        n, n_open, size = self._sizes(states)
        seg = torch.repeat_interleave(torch.arange(n.numel()), size)  # [K] state of each action
        local = torch.arange(int(size.sum())) - torch.repeat_interleave(size.cumsum(0) - size, size)
        frag = (local - 1).remainder(self.L)  # [K] fragment of each placement
        ns, no = n[seg], n_open[seg]
        stop_ok = ns >= self.min_blocks
        first_ok = (self.min_blocks <= 1) | (self.num_stems[frag] >= 1)
        # attaching closes one stem and opens len(stems) - 1; stay able to stop or grow
        attach_ok = (ns + 1 >= self.min_blocks) | (no - 1 + self.num_stems[frag] - 1 >= 1)
        return torch.where(local == 0, stop_ok, torch.where(ns == 0, first_ok, attach_ok))

    def is_stop(self, actions: torch.Tensor) -> torch.Tensor:
        return actions == 0

    def step(self, states: TensorDict, actions: torch.Tensor) -> TensorDict:
        """Apply local actions [B]."""
        blocks, parent, slot, open_ = (states[k].clone() for k in ("blocks", "parent", "slot", "open"))
        n = self.num_blocks(states)
        frag = (actions - 1).remainder(self.L)
        slots = torch.arange(self.R)
        r = torch.nonzero((actions > 0) & (n == 0)).squeeze(-1)  # first fragment: all its stems open
        blocks[r, 0] = frag[r]
        open_[r, 0] = slots[None] < self.num_stems[frag[r]][:, None]
        r = torch.nonzero((actions > 0) & (n > 0)).squeeze(-1)  # attach at the k-th open stem
        if r.numel():
            k = (actions[r] - 1) // self.L
            flat = open_[r].flatten(1)  # [b, Nb * R]
            hit = flat & (flat.cumsum(1) == (k + 1)[:, None])
            pos = hit.float().argmax(1)  # flat (block, slot) of the k-th open stem
            pb, ps, new = pos // self.R, pos % self.R, n[r]
            open_[r, pb, ps] = False
            blocks[r, new], parent[r, new], slot[r, new] = frag[r], pb, ps
            open_[r, new] = (slots[None] >= 1) & (slots[None] < self.num_stems[frag[r]][:, None])
        return TensorDict({"blocks": blocks, "parent": parent, "slot": slot, "open": open_},
                          batch_size=states.batch_size)

    def num_parents(self, states: TensorDict) -> torch.Tensor:
        """[B] leaves other than the root (fragments no other fragment is attached to); 1 for one fragment."""
        n, parent = self.num_blocks(states), states["parent"]
        B = n.shape[0]
        children = torch.zeros(B, self.Nb + 1, dtype=torch.int64)
        children.scatter_add_(1, parent.clamp_min(-1) % (self.Nb + 1), torch.ones_like(parent))  # -1 -> column Nb
        leaf = (states["blocks"] >= 0) & (children[:, : self.Nb] == 0)
        leaf[:, 0] = False
        return torch.where(n <= 1, 1, leaf.sum(1))

    # ---------------------------------------------------------------- graph view for the policy
    def graph_batch(self, states: TensorDict) -> dict[str, torch.Tensor]:
        """Block graph: node fragment ids x [V], junction edges (both directions) typed by the
        parent's stem id, node ptr [B+1]; open stems (node, stem id, flat position of their L
        logits) and the flat positions of stop / first-fragment logits."""
        blocks, parent, slot, open_ = states["blocks"], states["parent"], states["slot"], states["open"]
        n, n_open, size = self._sizes(states)
        act_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), size.cumsum(0)])
        g, k = torch.nonzero(blocks >= 0, as_tuple=True)  # sorted by graph, then block
        node_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
        eg, ek = torch.nonzero(parent >= 0, as_tuple=True)
        src, dst = node_ptr[eg] + parent[eg, ek], node_ptr[eg] + ek
        etype = self.stem_offset[blocks[eg, parent[eg, ek]]] + slot[eg, ek]
        sg, sk, sr = torch.nonzero(open_ & (n < self.Nb)[:, None, None], as_tuple=True)  # row-major = action order
        rank = torch.arange(sg.numel()) - torch.repeat_interleave(n_open.cumsum(0) - n_open, n_open)  # k of each stem
        return {"x": blocks[g, k], "edge_index": torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]),
                "edge_attr": torch.cat([etype, etype]), "batch": g, "node_ptr": node_ptr, "num_blocks": n,
                "act_ptr": act_ptr, "empty": n == 0, "stem_node": node_ptr[sg] + sk,
                "stem_type": self.stem_offset[blocks[sg, sk]] + sr, "stem_pos": act_ptr[sg] + 1 + rank * self.L}

    # ---------------------------------------------------------------- chemistry
    def _fragment_mols(self):
        if self._mols is None:
            from rdkit import Chem

            self._mols = [Chem.MolFromSmiles(s) for s in self.lib.smiles]
        return self._mols

    def to_mol(self, blocks, parent, slot, open_=None):
        """One state -> (sanitized RDKit Mol, atom indices of its open stems)."""
        from rdkit import Chem

        frags, n = self._fragment_mols(), int((blocks >= 0).sum())
        if n == 0:
            raise ValueError("the empty state has no molecule")
        mol, offset = Chem.RWMol(), []
        for k in range(n):
            offset.append(mol.GetNumAtoms())
            mol.InsertMol(frags[int(blocks[k])])
        for k in range(1, n):
            p = int(parent[k])
            _bond_replacing_h(mol, offset[p] + self.lib.stems[int(blocks[p])][int(slot[k])],
                              offset[k] + self.lib.stems[int(blocks[k])][0])
        mol = mol.GetMol()
        Chem.SanitizeMol(mol)
        stems = [] if open_ is None else [offset[k] + self.lib.stems[int(blocks[k])][r]
                                          for k, r in torch.nonzero(open_[:n]).tolist()]
        return mol, stems

    def molecules(self, states: TensorDict) -> tuple[list, list[list[int]]]:
        out = [self.to_mol(*(states[key][i] for key in ("blocks", "parent", "slot", "open")))
               for i in range(states.shape[0])]
        return [m for m, _ in out], [s for _, s in out]

    def smiles(self, states: TensorDict) -> list[str]:
        from rdkit import Chem

        return [Chem.MolToSmiles(m) for m in self.molecules(states)[0]]

    def reward_of_smiles(self, smiles: str) -> float:
        return self.rewarder.score(smiles)

    def log_reward(self, states: TensorDict) -> torch.Tensor:
        if self.rewarder.name != "seh":
            return self.rewarder.log_reward(self.smiles(states))  # cached by SMILES, new ones scored in one batch
        mols, stems = self.molecules(states)  # the proxy also reads the open stems
        r = torch.tensor(self.rewarder.score_mols(mols, stems), dtype=torch.float32)
        return r.clamp_min(self.rewarder.r_min).log()

    def evaluate_sampler(self, learner, num_samples: int) -> dict[str, float]:
        """Molecule metrics of `num_samples` fresh samples of the learned policy (no exploration)."""
        _, terminal, log_r = learner.sample(num_samples, epsilon=0.0)
        m = molecule_metrics(self.smiles(terminal), log_r.exp().tolist(), self.mode_threshold)
        return {f"eval/{k}": v for k, v in m.items()}


__all__ = ["FragmentMoleculeEnv", "FragmentLibrary", "load_fragment_library", "brics_library", "validate_library",
           "DEFAULT_MOLECULES"]
