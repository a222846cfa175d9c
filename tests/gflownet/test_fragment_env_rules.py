"""The fragment env on a three-block library, by hand: layout sizes, masks (stop, the atom budget,
dead ends), attaching at the k-th open stem, parent counts, the block graph, open-stem atoms,
rewards and evaluation."""

import json
import math

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors

from rlx.envs.fragments import FragmentMoleculeEnv, load_fragment_library
from rlx.envs.molecules import molecule_metrics

# fragment 0: methane, one stem; 1: water, two stems on its O; 2: benzene, stems on atoms 0 and 3
LIB = {"block_name": {"0": "C", "1": "O", "2": "benz"}, "block_smi": {"0": "C", "1": "O", "2": "c1ccccc1"},
       "block_r": {"0": [0], "1": [0, 0], "2": [0, 3]}}
C, O, BENZ = 0, 1, 2


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "lib.json"
    path.write_text(json.dumps(LIB))
    return str(path)


def make(lib, **kw):
    return FragmentMoleculeEnv(library=lib, **{"max_blocks": 3, "min_blocks": 2, "reward": "mw", **kw})


def place(f):  # first fragment f
    return 1 + f


def attach(k, f, L=3):  # fragment f at the k-th open stem
    return 1 + k * L + f


def build(env, *actions):
    s = env.reset(1)
    for a in actions:
        s = env.step(s, torch.tensor([a]))
    return s


def test_sizes_of_the_library_and_the_layout(lib):
    env = make(lib)
    assert (env.L, env.R, env.max_steps, env.num_stem_types) == (3, 2, 3, 5)
    assert env.num_stems.tolist() == [1, 2, 2] and env.stem_offset.tolist() == [0, 1, 3, 5]
    empty, benz = build(env), build(env, place(BENZ))
    full = build(env, place(BENZ), attach(1, C), attach(0, O))
    # stop + L first placements / stop + L per open stem / a full state has only stop
    assert env.action_ptr(torch.cat([empty, benz, full])).tolist() == [0, 4, 11, 12]


def test_masks_stop_only_from_min_blocks_and_never_into_a_dead_end(lib):
    env = make(lib)
    assert env.forward_mask(build(env)).tolist() == [False, True, True, True]
    assert env.forward_mask(build(env, place(C))).tolist() == [False, True, True, True]
    assert env.forward_mask(build(env, place(C), attach(0, O))).tolist() == [True, True, True, True]
    assert env.forward_mask(build(env, place(BENZ), attach(1, C), attach(0, O))).tolist() == [True]  # max_blocks
    strict = make(lib, min_blocks=3)  # methane on methane would close the last stem with 2 < 3 blocks
    assert strict.forward_mask(build(strict, place(C))).tolist() == [False, False, True, True]
    assert strict.forward_mask(build(strict, place(C), attach(0, O))).tolist() == [False, True, True, True]
    single = make(lib, min_blocks=1)
    assert single.forward_mask(build(single, place(C))).tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="1 <= min_blocks <= max_blocks"):
        make(lib, min_blocks=0)
    with pytest.raises(ValueError, match="1 <= min_blocks <= max_blocks"):
        make(lib, min_blocks=4)
    assert make(lib, min_blocks=3).min_blocks == 3


def test_steps_open_and_close_stems(lib):
    env = make(lib)
    s = build(env, place(BENZ))
    assert s["blocks"].tolist() == [[2, -1, -1]] and s["open"][0, 0].tolist() == [True, True]
    s = env.step(s, torch.tensor([attach(1, C)]))  # the second open stem: benzene's slot 1 (atom 3)
    assert s["blocks"].tolist() == [[2, 0, -1]] and s["parent"].tolist() == [[-1, 0, -1]]
    assert s["slot"].tolist() == [[-1, 1, -1]]
    assert s["open"][0].tolist() == [[True, False], [False, False], [False, False]]  # methane opens nothing
    s = env.step(s, torch.tensor([attach(0, O)]))
    assert s["blocks"].tolist() == [[2, 0, 1]] and s["parent"].tolist() == [[-1, 0, 0]]
    assert s["slot"].tolist() == [[-1, 1, 0]]
    assert s["open"][0].tolist() == [[False, False], [False, False], [False, True]]  # water's second stem
    assert env.step(s, torch.tensor([0]))["blocks"].tolist() == s["blocks"].tolist()  # stop changes nothing
    two = torch.cat([build(env, place(O)), build(env, place(BENZ))])  # attach in a batch, different k
    nxt = env.step(two, torch.tensor([attach(0, C), attach(1, O)]))
    assert nxt["slot"].tolist() == [[-1, 0, -1], [-1, 1, -1]]
    assert nxt["open"][:, 0].tolist() == [[False, True], [True, False]]
    assert env.is_stop(torch.tensor([0, 1])).tolist() == [True, False]


def test_molecules_and_their_open_stem_atoms(lib):
    env = make(lib)
    s = torch.cat([build(env, place(BENZ), attach(1, C)), build(env, place(BENZ), attach(1, C), attach(0, O))])
    mols, stems = env.molecules(s)
    assert [Chem.MolToSmiles(m) for m in mols] == env.smiles(s) == ["Cc1ccccc1", "Cc1ccc(O)cc1"]
    assert stems == [[0], [7]]  # benzene's atom 0; water's O (atoms 0-5 benzene, 6 methane, 7 water)
    with pytest.raises(ValueError, match="empty state has no molecule"):
        env.molecules(env.reset(1))


@pytest.mark.parametrize("actions,count", [
    ([place(C)], 1),
    ([place(BENZ), attach(0, C)], 1),
    ([place(BENZ), attach(0, C), attach(0, C)], 2),  # a star: either leaf comes off
    ([place(O), attach(0, O), attach(0, C)], 2),     # the root water's second stem: a star again
    ([place(O), attach(0, O), attach(1, C)], 1),     # the new water's stem: a chain, only the last
])
def test_parent_counts_are_the_non_root_leaves(lib, actions, count):
    env = make(lib)
    assert env.num_parents(build(env, *actions)).tolist() == [count]


def test_block_graph_of_a_batch(lib):
    env = make(lib)
    s = torch.cat([build(env), build(env, place(BENZ)), build(env, place(BENZ), attach(1, C)),
                   build(env, place(BENZ), attach(1, C), attach(0, O))])
    gb = env.graph_batch(s)
    assert gb["x"].tolist() == [2, 2, 0, 2, 0, 1] and gb["batch"].tolist() == [1, 2, 2, 3, 3, 3]
    assert gb["node_ptr"].tolist() == [0, 0, 1, 3, 6] and gb["num_blocks"].tolist() == [0, 1, 2, 3]
    assert gb["act_ptr"].tolist() == [0, 4, 11, 15, 16] and gb["empty"].tolist() == [True, False, False, False]
    # junctions parent -> child, then child -> parent, typed by the parent's (fragment, slot) stem id
    assert gb["edge_index"].tolist() == [[1, 3, 3, 2, 4, 5], [2, 4, 5, 1, 3, 3]]
    assert gb["edge_attr"].tolist() == [4, 4, 3, 4, 4, 3]
    # open stems that can take a fragment: benzene alone (k = 0, 1), benzene + methane (k = 0); the full state none
    assert gb["stem_node"].tolist() == [0, 0, 1]
    assert gb["stem_type"].tolist() == [3, 4, 3]
    assert gb["stem_pos"].tolist() == [4 + 1, 4 + 1 + 3, 11 + 1]


def test_log_reward_and_metrics_of_samples(lib):
    env = make(lib, mw_window=(100.0, 105.0), r_min=0.01, mode_threshold=0.5)
    s = torch.cat([build(env, place(BENZ), attach(1, C)), build(env, place(BENZ), attach(1, C), attach(0, O))])
    mw = [Descriptors.MolWt(Chem.MolFromSmiles(x)) for x in ("Cc1ccccc1", "Cc1ccc(O)cc1")]  # 92.1, 108.1
    expected = [math.exp(-(100.0 - mw[0]) / 20), math.exp(-(mw[1] - 105.0) / 20)]
    torch.testing.assert_close(env.log_reward(s), torch.tensor(expected).log())
    assert env.reward_of_smiles("Cc1ccccc1") == pytest.approx(expected[0])
    far = make(lib, mw_window=(500.0, 600.0), r_min=0.01)
    torch.testing.assert_close(far.log_reward(s), torch.full((2,), math.log(0.01)))

    class Sampler:
        def sample(self, n, epsilon):
            assert epsilon == 0.0, "evaluation must sample without exploration"
            return None, s[:n], torch.tensor([0.9, 0.2]).log()  # the sampler's own rewards are reported

    out = env.evaluate_sampler(Sampler(), 2)
    ref = molecule_metrics(["Cc1ccccc1", "Cc1ccc(O)cc1"], [0.9, 0.2], 0.5)
    assert out == pytest.approx({f"eval/{k}": v for k, v in ref.items()})
    assert out["eval/num_modes"] == 1.0 and out["eval/top10_reward"] == pytest.approx(0.55)


def test_library_formats_and_row_checks(tmp_path):
    cols = tmp_path / "cols.json"
    cols.write_text(json.dumps({"block_name": ["a", "b"], "block_smi": ["C", "O"], "block_r": ["[0]", "[0, 0]"]}))
    lib = load_fragment_library(cols)  # columns as lists, stems as JSON strings
    assert lib.names == ["a", "b"] and lib.smiles == ["C", "O"] and lib.stems == [[0], [0, 0]] and len(lib) == 2
    bad = tmp_path / "bad.json"
    for rows, match in [({"block_name": {}, "block_smi": {}, "block_r": {}}, "is empty"), ([{"block_name": "a", "block_smi": "C", "block_r": []}], "a: no stems"),
                        ([{"block_name": "a", "block_smi": "CC", "block_r": [2]}], r"stem atoms \[2\] outside 0..1"),
                        ([{"block_name": "a", "block_smi": "CC", "block_r": [-1]}], r"stem atoms \[-1\] outside"),
                        ([{"block_name": "a", "block_smi": "O", "block_r": [0, 0, 0]}], "3 stems on O do not fit")]:
        bad.write_text(json.dumps(rows))
        with pytest.raises(ValueError, match=match):
            load_fragment_library(bad)
    bad.write_text(json.dumps("C"))
    with pytest.raises(ValueError, match="expected a JSON object or list, got str"):
        load_fragment_library(bad)
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("")
    with pytest.raises(ValueError, match="missing column"):
        load_fragment_library(empty_csv)
    assert len(load_fragment_library("PDB_105")) == 105  # a packaged library by name
