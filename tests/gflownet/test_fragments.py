"""Fragment-based molecule env: library loading, masks, validity, parent counts, policy layout."""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from rdkit import Chem
from tensordict import TensorDict

from rlx import kernels
from rlx.algos.gflownet import GFlowNet, GFlowNetConfig
from rlx.models.graph_nets import FragmentPolicy, graph_policy
from rlx.envs.fragments import FragmentMoleculeEnv, brics_library, load_fragment_library

LIBRARIES = [None, "PDB_105"]  # the BRICS default and the packaged 105-block library


def _random_rollout(env, n, g, stop_logit=-2.0):
    """States visited by n random trajectories (uniform over allowed actions, stop down-weighted)."""
    states, seen = env.reset(n), []
    for _ in range(env.max_steps + 1):
        mask, ptr = env.forward_mask(states), env.action_ptr(states)
        logits = torch.where(mask, torch.rand(mask.shape[0], generator=g), float("-inf"))
        logits[ptr[:-1]] = torch.where(mask[ptr[:-1]], stop_logit, float("-inf"))
        action = kernels.segment_sample(logits, ptr, g) - ptr[:-1]
        assert (action >= 0).all(), "a reachable state without an allowed action"
        seen.append(states)
        keep = ~env.is_stop(action)
        if not keep.any():
            break
        states = env.step(states, action)[keep]
    return torch.cat(seen)


def _check_structure(env, s):
    """Each non-root fragment hangs from an earlier one; open slots exist in the fragment's stem list."""
    n = env.num_blocks(s)
    for b in range(s.shape[0]):
        k = int(n[b])
        assert (s["blocks"][b, :k] >= 0).all() and (s["blocks"][b, k:] == -1).all()
        assert (s["parent"][b, 1:k] < torch.arange(1, k)).all() and (s["parent"][b, 1:k] >= 0).all()
        for j in range(k):
            assert not s["open"][b, j, env.num_stems[s["blocks"][b, j]]:].any()
            if j:
                assert not s["open"][b, j, 0]  # slot 0 of a non-root fragment holds its bond to the parent
        assert not s["open"][b, k:].any()


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_terminal_molecule_sanitizes(library):
    torch.manual_seed(0)
    env = FragmentMoleculeEnv(library=library, max_blocks=6)
    learner = GFlowNet(GFlowNetConfig(epsilon=0.5), env, FragmentPolicy(env, 16, 1))
    store, terminal, log_r = learner.sample(128)
    smiles = env.smiles(terminal)
    assert all(Chem.MolFromSmiles(s) is not None for s in smiles) and len(set(smiles)) > 60
    n = env.num_blocks(terminal)
    assert ((n >= env.min_blocks) & (n <= 6)).all() and torch.isfinite(log_r).all()
    _check_structure(env, terminal)
    assert bool(store.data["terminated"][store.ptr[1:] - 1].all()) and int(store.data["terminated"].sum()) == 128


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), max_blocks=st.integers(2, 5), min_blocks=st.integers(1, 3),
       pdb=st.booleans())
def test_masks_never_allow_an_invalid_action(seed, max_blocks, min_blocks, pdb):
    """Every allowed action of visited states gives a well-formed tree whose molecule sanitizes and
    that can still stop or grow; stop is allowed exactly from min_blocks fragments on."""
    env = FragmentMoleculeEnv(library="PDB_105" if pdb else None, max_blocks=max_blocks,
                              min_blocks=min(min_blocks, max_blocks))
    g = torch.Generator().manual_seed(seed)
    states = _random_rollout(env, 3, g)
    mask, ptr = env.forward_mask(states), env.action_ptr(states)
    assert mask.shape[0] == int(ptr[-1])
    n = env.num_blocks(states)
    assert (mask[ptr[:-1]] == (n >= env.min_blocks)).all()
    for b in range(states.shape[0]):
        allowed = torch.nonzero(mask[ptr[b] + 1 : ptr[b + 1]]).squeeze(-1) + 1  # moves
        if allowed.numel() == 0:
            continue
        pick = allowed[torch.randperm(allowed.numel(), generator=g)[:40]]
        nxt = env.step(states[b : b + 1].expand(pick.numel()).clone(), pick)
        assert (env.num_blocks(nxt) == n[b] + 1).all()
        _check_structure(env, nxt)
        opened = states["open"][b].sum() - (n[b] > 0).long() + env.num_stems[(pick - 1) % env.L] - (n[b] > 0).long()
        assert (nxt["open"].flatten(1).sum(1) == opened).all()  # one stem closed, the fragment's others opened
        nmask, nptr = env.forward_mask(nxt), env.action_ptr(nxt)
        assert (kernels.segment_sum(nmask.float(), nptr) >= 1).all(), "an action leads to a dead end"
        for i in range(nxt.shape[0]):
            mol, stems = env.to_mol(nxt["blocks"][i], nxt["parent"][i], nxt["slot"][i], nxt["open"][i])
            assert Chem.MolFromSmiles(Chem.MolToSmiles(mol)) is not None
            Chem.SanitizeMol(_capped(mol, stems))  # every open stem can still take a bond


def _capped(mol, stems):
    """mol with a methyl on every open stem (an atom with explicit hydrogens gives one up per bond)."""
    rw = Chem.RWMol(mol)
    for a in stems:
        c = rw.AddAtom(Chem.Atom(6))
        rw.AddBond(a, c, Chem.BondType.SINGLE)
        atom = rw.GetAtomWithIdx(a)
        atom.SetNumExplicitHs(max(atom.GetNumExplicitHs() - 1, 0))
    return rw


def _tree_key(blocks, parent, slot, k=0):
    """Canonical form of the rooted tree below fragment k (order of addition does not matter)."""
    kids = [j for j in range(len(blocks)) if parent[j] == k and j != k and blocks[j] >= 0]
    return (blocks[k], tuple(sorted((slot[j], _tree_key(blocks, parent, slot, j)) for j in kids)))


def test_parent_counts_match_brute_force_enumeration(tmp_path):
    lib = tmp_path / "tiny.json"
    lib.write_text(json.dumps({"block_name": {"0": "CC", "1": "c1ccccc1", "2": "O"}, "block_smi": {"0": "CC", "1": "c1ccccc1", "2": "O"},
                               "block_r": {"0": [0, 1], "1": [0, 2, 4], "2": [0]}}))
    env = FragmentMoleculeEnv(library=str(lib), max_blocks=4, min_blocks=1)
    parents: dict = {}
    frontier, counted = env.reset(1), {}
    while frontier.shape[0]:
        mask, ptr = env.forward_mask(frontier), env.action_ptr(frontier)
        nxt_all = []
        for b in range(frontier.shape[0]):
            moves = torch.nonzero(mask[ptr[b] + 1 : ptr[b + 1]]).squeeze(-1) + 1
            if moves.numel() == 0:
                continue
            src = frontier[b]
            src_key = _tree_key(*(src[k].tolist() for k in ("blocks", "parent", "slot"))) if env.num_blocks(src[None])[0] else ()
            nxt = env.step(frontier[b : b + 1].expand(moves.numel()).clone(), moves)
            for i in range(nxt.shape[0]):
                key = _tree_key(*(nxt[k][i].tolist() for k in ("blocks", "parent", "slot")))
                parents.setdefault(key, set()).add(src_key)
                if key not in counted:
                    counted[key] = int(env.num_parents(nxt[i : i + 1])[0])
                    nxt_all.append(nxt[i : i + 1])
                assert counted[key] == int(env.num_parents(nxt[i : i + 1])[0])  # same count in every order
        frontier = torch.cat(nxt_all) if nxt_all else frontier[:0]
    assert len(counted) > 200
    assert all(counted[k] == len(parents[k]) for k in counted)


def test_library_loading_errors_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="fragment library .*nope.json not found"):
        load_fragment_library(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"block_name": {"0": "a"}, "block_smi": {"0": "CC"}}))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['block_r'\]"):
        load_fragment_library(bad)
    bad.write_text(json.dumps([{"block_name": "a", "block_smi": "C1CC", "block_r": [0]}]))
    with pytest.raises(ValueError, match="does not parse"):
        load_fragment_library(bad)
    bad.write_text(json.dumps([{"block_name": "a", "block_smi": "FC(F)(F)F", "block_r": [1]}]))
    with pytest.raises(ValueError, match="do not fit its valences"):
        load_fragment_library(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_fragment_library(bad)
    rows = [{"block_name": "CO_0", "block_smi": "CO", "block_r": [0, 1]}, {"block_name": "c1ccncc1_1", "block_smi": "c1ccncc1", "block_r": [1, 0]}]
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps(rows))
    csv_file = tmp_path / "lib.csv"
    csv_file.write_text("block_name,block_smi,block_r\n" + "".join(f'{r["block_name"]},{r["block_smi"]},"{r["block_r"]}"\n' for r in rows))
    a, b = load_fragment_library(rec), load_fragment_library(csv_file)
    assert a.smiles == b.smiles == ["CO", "c1ccncc1"] and a.stems == b.stems == [[0, 1], [1, 0]]
    with pytest.raises(FileNotFoundError, match="not found"):
        FragmentMoleculeEnv(library=str(tmp_path / "missing.json"))


def test_brics_default_library():
    lib = brics_library()
    assert len(lib) >= 30 and len(set(lib.names)) == len(lib)
    assert all(Chem.MolFromSmiles(s) is not None for s in lib.smiles)
    assert "c1ccccc1" in lib.smiles and any(len(r) >= 2 for r in lib.stems)  # linkers, not only caps


def test_policy_fills_the_ragged_layout_exactly_once():
    torch.manual_seed(0)
    env = FragmentMoleculeEnv(max_blocks=4)
    states = torch.cat([env.reset(2), _random_rollout(env, 6, torch.Generator().manual_seed(1))])
    gb = env.graph_batch(states)
    start = gb["act_ptr"][:-1]
    empty = torch.nonzero(gb["empty"]).squeeze(-1)
    pos = torch.cat([start, (start[empty, None] + 1 + torch.arange(env.L)).flatten(),
                     (gb["stem_pos"][:, None] + torch.arange(env.L)).flatten()])
    assert sorted(pos.tolist()) == list(range(int(gb["act_ptr"][-1])))
    model = graph_policy(env, 16, 2, "nnconv")
    assert isinstance(model, FragmentPolicy)
    learner = GFlowNet(GFlowNetConfig(objective="subtb"), env, model)
    store, _, log_r = learner.sample(8)
    loss, _ = learner.loss(store, log_r)
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0]
    assert torch.isfinite(loss) and not dead, dead  # every layer takes part in the loss


def test_cli_trains_on_fragments(tmp_path):
    from rlx.core.checkpoint import load_checkpoint
    from rlx.train import main

    assert main(["algo=gflownet_molecules", "env=molecules_fragments", "algo.batch_size=4", "algo.hidden=16",
                 "env.kwargs.max_blocks=3", "trainer.total_steps=8", "trainer.eval_every=0", "algo.eval_samples=8",
                 f"trainer.run_dir={tmp_path}", "trainer.progress=false", "trainer.tensorboard=false"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval/validity"] == 1.0 and summary["loss/tb"] > 0
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["loop"]["steps"] == 8 and ckpt["loop"]["iterations"] == 2  # two updates of 4 molecules
    assert float(ckpt["learner"]["log_z"]) != 0.0  # log Z (initialised at 0) was trained
    assert summary["train/log_z"] == pytest.approx(float(ckpt["learner"]["log_z"]), abs=0.2)
    # the evaluation ranks algo.eval_samples = 8 molecules: at most 8 unique, top-100 = top-1000 = their mean
    assert summary["eval/num_unique"] <= 8 and summary["eval/top100_reward"] == summary["eval/top1000_reward"]
    assert summary["eval/top10_reward"] >= summary["eval/top100_reward"] > 0


def test_states_are_plain_tensordicts():
    env = FragmentMoleculeEnv()
    s = env.reset(3)
    assert isinstance(s, TensorDict) and s["open"].shape == (3, env.Nb, env.R) and (env.num_parents(s) == 1).all()
