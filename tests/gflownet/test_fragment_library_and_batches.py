"""More fragment-env rules by hand: BRICS fragments of single molecules (stems, explicit
hydrogens, the size cut), library files (CSV newlines, one row, an empty list, the file named in
errors), the constructor's defaults, masks / parent counts / block graphs of mixed batches, a
stop that leaves every state as it is, attaching through a first stem that is not atom 0, and
the sEH branch of `log_reward`."""

import json
import math

import pytest
import torch
from rdkit import Chem

from rlx.envs.fragments import FragmentLibrary, FragmentMoleculeEnv, brics_library, load_fragment_library, validate_library
from tests.gflownet.test_fragment_env_rules import BENZ, LIB, C, O, attach, build, make, place

ASPIRIN, NICOTINE = "CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1"


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "lib.json"
    path.write_text(json.dumps(LIB))
    return str(path)


def rows(lib):
    return list(zip(lib.names, lib.smiles, lib.stems))


def test_brics_fragments_of_single_molecules():
    # aspirin: acetyl, the ring (two stems, one row per first stem), the ester O (two stems on one atom), carboxyl
    assert rows(brics_library([ASPIRIN])) == [("CC=O_1", "CC=O", [1]), ("c1ccccc1_2,3", "c1ccccc1", [2, 3]),
                                              ("c1ccccc1_3,2", "c1ccccc1", [3, 2]), ("O_0,0", "O", [0, 0]),
                                              ("O=CO_1", "O=CO", [1])]
    # three stems: the other two follow the first, comma-separated
    assert brics_library(["CC(C)c1cc(C(C)C)cc(C(C)C)c1"]).names == ["c1ccccc1_0,2,4", "c1ccccc1_2,0,4",
                                                                     "c1ccccc1_4,0,2", "CCC_1"]
    # a cut at a chiral [C@H] and at an aromatic n: the hydrogen that replaces the bond is written out
    assert rows(brics_library([NICOTINE])) == [("CN1CCCC1_2", "CN1CCCC1", [2]), ("c1ccncc1_1", "c1ccncc1", [1])]
    assert rows(brics_library(["CCn1ccnc1"])) == [("CC_0", "CC", [0]), ("c1c[nH]cn1_2", "c1c[nH]cn1", [2])]


def test_brics_size_cut_keeps_fragments_of_exactly_max_atoms():
    # sorted BRICS fragments of aspirin: acetyl (3 atoms), ring (6), O (1), carboxyl (3)
    assert brics_library([ASPIRIN], max_atoms=3).names == ["CC=O_1", "O_0,0", "O=CO_1"]
    assert brics_library([ASPIRIN], max_atoms=2).names == ["O_0,0"]
    # the default cut is 12 heavy atoms: max_atoms=15 admits a fragment of the default molecules it leaves out
    assert max(Chem.MolFromSmiles(s).GetNumAtoms() for s in brics_library().smiles) <= 12
    assert len(brics_library(max_atoms=15)) > len(brics_library())


def test_brics_errors_are_one_line():
    with pytest.raises(ValueError, match=r"^molecule 'not a smiles' does not parse$"):
        brics_library(["not a smiles"])
    with pytest.raises(ValueError, match=r"^fragment BRICS library is empty$"):  # caffeine has no BRICS bond
        brics_library(["Cn1c(=O)c2c(ncn2C)n(C)c1=O"])


def test_library_files_csv_newlines_one_row_and_an_empty_list(tmp_path):
    csv_path = tmp_path / "one.csv"
    csv_path.write_bytes(b'block_name,block_smi,block_r\r\n"a\r\nb",C,[0]\r\n')  # a quoted field keeps its \r\n
    lib = load_fragment_library(csv_path)
    assert rows(lib) == [("a\r\nb", "C", [0])]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['block_name', 'block_smi', 'block_r'\]"):
        load_fragment_library(empty)


def test_library_errors_name_their_source(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"block_name": "a", "block_smi": "X1", "block_r": [0]}]))
    with pytest.raises(ValueError) as e:
        load_fragment_library(bad)
    assert str(e.value) == f"fragment {bad}: a: SMILES 'X1' does not parse"
    with pytest.raises(ValueError, match=r"^fragment library: b: SMILES 'X1' does not parse$"):
        validate_library(FragmentLibrary(["b"], ["X1"], [[0]]))  # the default source
    with pytest.raises(ValueError, match=r"^fragment library: w: 3 stems on O do not fit its valences "
                                         r"\(AtomValenceException\)$"):
        validate_library(FragmentLibrary(["w"], ["O"], [[0, 0, 0]]))


def test_constructor_defaults_and_what_reaches_the_reward(lib):
    env = FragmentMoleculeEnv(library=lib)
    assert (env.Nb, env.min_blocks, env.mode_threshold) == (8, 2, 0.5)
    assert (env.rewarder.name, env.rewarder.r_min, env.rewarder.exponent, env.rewarder.seh_path) == ("qed_sa_mw", 1e-3, 1.0, None)
    env = FragmentMoleculeEnv(library=lib, seh_path="proxy.pt", reward_exponent=2.0, r_min=0.02)
    assert (env.rewarder.seh_path, env.rewarder.exponent, env.rewarder.r_min) == ("proxy.pt", 2.0, 0.02)
    assert env.stem_offset.dtype == torch.int64 and env.stem_offset.tolist() == [0, 1, 3, 5]
    assert FragmentMoleculeEnv(reward="mw").lib.names == brics_library().names  # no library: the BRICS default


def states(env, *builds):
    return torch.cat([build(env, *b) for b in builds])


def test_masks_and_parent_counts_of_a_batch_are_those_of_each_state(lib):
    env = make(lib)
    builds = [(), (place(C),), (place(BENZ), attach(1, C)), (place(BENZ), attach(1, C), attach(0, O)),
              (place(O), attach(0, O))]
    batch = states(env, *builds)
    assert env.forward_mask(batch).tolist() == sum((env.forward_mask(build(env, *b)).tolist() for b in builds), [])
    # a star (2 leaves), a chain (1), one fragment (1), two fragments (1)
    trees = states(env, (place(BENZ), attach(0, C), attach(0, C)), (place(O), attach(0, O), attach(1, C)), (place(C),),
                   (place(BENZ), attach(0, C)))
    assert env.num_parents(trees).tolist() == [2, 1, 1, 1]


def test_block_graph_indices_of_a_later_graph_are_offset(lib):
    env = make(lib)
    # graph 0: benzene (node 0); graph 1: water - water (nodes 1, 2), both waters with one open stem;
    # graph 2: the chain water - water - methane (nodes 3, 4, 5), the methane on the second water
    batch = states(env, (place(BENZ),), (place(O), attach(0, O)), (place(O), attach(0, O), attach(1, C)))
    gb = env.graph_batch(batch)
    assert gb["node_ptr"].tolist() == [0, 1, 3, 6]
    assert gb["edge_index"].tolist() == [[1, 3, 4, 2, 4, 5], [2, 4, 5, 1, 3, 4]]
    assert gb["edge_attr"].tolist() == [1, 1, 2, 1, 1, 2]  # water's slot 0 (id 1), then the second water's slot 1 (id 2)
    # benzene's two stems, each water's slot 1 in graph 1; graph 2 is full (max_blocks = 3): none
    assert gb["stem_node"].tolist() == [0, 0, 1, 2]
    for key in ("node_ptr", "act_ptr", "edge_index", "edge_attr", "stem_node", "stem_type", "stem_pos", "x", "batch"):
        assert gb[key].dtype == torch.int64, key


def test_a_stop_leaves_every_state_as_it_is(lib):
    env = make(lib)
    batch = states(env, (), (place(C),), (place(BENZ), attach(1, C), attach(0, O)))
    out = env.step(batch, torch.zeros(3, dtype=torch.int64))
    for key in ("blocks", "parent", "slot", "open"):
        assert torch.equal(out[key], batch[key]), key


def test_attaching_through_a_first_stem_that_is_not_atom_0(tmp_path):
    path = tmp_path / "lib.json"  # 0: methanol attached by its carbon (atom 1); 1: benzene with stems 0 and 3
    path.write_text(json.dumps({"block_name": ["MeOH", "benz"], "block_smi": ["OC", "c1ccccc1"], "block_r": [[1], [0, 3]]}))
    env = FragmentMoleculeEnv(library=str(path), max_blocks=3, min_blocks=2, reward="mw")
    s = build(env, 1 + 1, 1 + 0 * 2 + 0)  # benzene, then methanol at its first open stem
    assert env.smiles(s) == ["OCc1ccccc1"]
    # benzene after methanol: its slot 1 (atom 3) stays open, atom 2 + 3 of the molecule
    s = build(env, 1 + 0, 1 + 0 * 2 + 1)
    mol, stems = env.to_mol(*(s[k][0] for k in ("blocks", "parent", "slot", "open")))
    assert Chem.MolToSmiles(mol) == "OCc1ccccc1" and stems == [5]
    assert env.to_mol(*(s[k][0] for k in ("blocks", "parent", "slot")))[1] == []  # no open mask: no stems
    with pytest.raises(ValueError, match=r"^the empty state has no molecule$"):
        env.to_mol(*(env.reset(1)[k][0] for k in ("blocks", "parent", "slot")))


def test_seh_log_reward_scores_the_molecules_with_their_open_stems_and_floors_at_r_min(lib, monkeypatch):
    env = make(lib)
    s = states(env, (place(BENZ), attach(1, C)), (place(BENZ), attach(1, C), attach(0, O)))
    seen = []

    def score_mols(mols, stems):
        seen.append(([Chem.MolToSmiles(m) for m in mols], stems))
        return [0.5, 1e-9]

    monkeypatch.setattr(env.rewarder, "name", "seh")
    monkeypatch.setattr(env.rewarder, "score_mols", score_mols)
    env.rewarder.r_min = 1e-3
    out = env.log_reward(s)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([math.log(0.5), math.log(1e-3)]))
    assert seen == [(["Cc1ccccc1", "Cc1ccc(O)cc1"], [[0], [7]])]


def test_evaluation_asks_the_sampler_for_num_samples(lib):
    env = make(lib)
    s = states(env, (place(BENZ), attach(1, C)), (place(BENZ), attach(1, C), attach(0, O)), (place(C), attach(0, C)))
    asked = []

    class Sampler:
        def sample(self, n, epsilon):
            asked.append(n)
            return None, s[:n], torch.zeros(n)

    assert env.evaluate_sampler(Sampler(), 2)["eval/num_unique"] == 2.0 and asked == [2]
