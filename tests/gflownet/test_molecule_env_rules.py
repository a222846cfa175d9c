"""The atom-based molecule env on hand-built graphs: the action layout, masks at valence and
bond-order limits, steps, parent counts, the graph view, and every reward's formula and floor."""

import math

import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Descriptors, rdFingerprintGenerator
from rdkit.Contrib.SA_Score import sascorer
from tensordict import TensorDict

from rlx.envs.molecules import DEFAULT_TARGETS, AtomMoleculeEnv, MoleculeReward, fingerprint, molecule_metrics

# N = 3 atoms of types (C, O): local action index -> meaning
# 0 stop | 1, 2 first C / O | 3, 4 add C / O to atom 0 | 5, 6 add C / O to atom 1 | 7 pair (0, 1)
# | 8, 9 add C / O to atom 2 | 10 pair (0, 2) | 11 pair (1, 2)
STOP, FIRST_C, ADD0_C, ADD0_O, ADD1_C, ADD1_O, PAIR01, PAIR02, PAIR12 = 0, 1, 3, 4, 5, 6, 7, 10, 11


def env3(**kw) -> AtomMoleculeEnv:
    return AtomMoleculeEnv(max_atoms=3, atoms=("C", "O"), reward="mw", **kw)


def build(env, *actions_per_state) -> TensorDict:
    """States reached from the empty graph by the given local actions (one list per state)."""
    out = []
    for actions in actions_per_state:
        s = env.reset(1)
        for a in actions:
            s = env.step(s, torch.tensor([a]))
        out.append(s)
    return torch.cat(out)


def graph(atoms, bond_list, N=3) -> TensorDict:
    a = torch.full((1, N), -1, dtype=torch.int64)
    a[0, : len(atoms)] = torch.tensor(atoms)
    b = torch.zeros(1, N, N, dtype=torch.int64)
    for i, j, order in bond_list:
        b[0, i, j] = b[0, j, i] = order
    return TensorDict({"atoms": a, "bonds": b}, batch_size=[1])


def test_layout_decodes_every_local_index():
    env = env3()
    empty = env.reset(2)
    assert empty["atoms"].dtype == empty["bonds"].dtype == torch.int64 and empty.batch_size == torch.Size([2])
    assert env.kind.tolist() == [0, 1, 1, 2, 2, 2, 2, 3, 2, 2, 3, 3]
    assert env.arg_a.tolist() == [0, 0, 1, 0, 0, 1, 1, 0, 2, 2, 0, 1]  # first / add: type or atom j; pair: atom i
    assert env.arg_b.tolist() == [0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 2, 2]  # add: type t; pair: atom j
    assert env.block_start.tolist() == [3, 5, 8, 12]
    assert env.max_steps == 1 + 2 + 4 * 3  # first atom, two adds, every remaining bond order
    assert env.action_ptr(build(env, [], [FIRST_C], [FIRST_C, ADD0_O])).tolist() == [0, 3, 8, 16]


def test_masks_follow_the_valences_and_the_atom_budget():
    env = env3()
    empty, c, co = build(env, []), build(env, [FIRST_C]), build(env, [FIRST_C, ADD0_O])
    assert env.forward_mask(empty).tolist() == [False, True, True]  # no stop before min_atoms, first atom only
    assert env.forward_mask(c).tolist() == [True, False, False, True, True]
    assert env.forward_mask(co).tolist() == [True, False, False, True, True, True, True, True]
    c_eq_o = env.step(co, torch.tensor([PAIR01]))  # O has no free valence left: nothing attaches to it
    assert c_eq_o["bonds"][0, 0, 1] == 2 and c_eq_o["bonds"][0, 1, 0] == 2
    assert env.smiles(c_eq_o) == ["C=O"] and env.smiles(graph([0, 0], [(0, 1, 3)])) == ["C#C"]
    assert env.forward_mask(c_eq_o).tolist() == [True, False, False, True, True, False, False, False]
    cc_triple = graph([0, 0], [(0, 1, 3)])  # free valence 1 each, but a bond order stops at 3
    assert env.forward_mask(cc_triple).tolist() == [True, False, False, True, True, True, True, False]
    full = build(env, [FIRST_C, ADD0_C, ADD1_C])  # three atoms: no more adds, ring closure allowed
    mask = env.forward_mask(full).tolist()
    assert mask[:3] == [True, False, False] and mask[3:5] + mask[5:7] + mask[8:10] == [False] * 6
    assert mask[PAIR01] and mask[PAIR02] and mask[PAIR12]
    late = AtomMoleculeEnv(max_atoms=3, atoms=("C", "O"), reward="mw", min_atoms=2)
    assert env.forward_mask(build(late, [FIRST_C]))[0].item() is True
    assert late.forward_mask(build(late, [FIRST_C]))[0].item() is False
    assert late.forward_mask(build(late, [FIRST_C, ADD0_C]))[0].item() is True


def test_steps_of_every_kind_in_one_batch():
    env = env3()
    s = build(env, [], [FIRST_C], [FIRST_C, ADD0_O], [FIRST_C, ADD0_C, ADD1_C])
    nxt = env.step(s, torch.tensor([2, ADD0_O, ADD1_C, PAIR02]))  # first O / add O to 0 / add C to 1 / close ring
    assert nxt["atoms"].tolist() == [[1, -1, -1], [0, 1, -1], [0, 1, 0], [0, 0, 0]]
    assert nxt["bonds"][1].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert nxt["bonds"][2].tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert nxt["bonds"][3].tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert env.step(s[1:2], torch.tensor([STOP]))["atoms"].tolist() == s[1:2]["atoms"].tolist()
    assert s["atoms"][1].tolist() == [0, -1, -1]  # the input states are not modified
    assert env.is_stop(torch.tensor([0, 3])).tolist() == [True, False]
    assert env.smiles(nxt[1:]) == ["CO", "COC", "C1CC1"]


@pytest.mark.parametrize("atoms,bond_list,count", [
    ([], [], 0),                                     # the empty graph has no parent
    ([0], [], 1),                                    # one atom: the empty graph
    ([0, 1], [(0, 1, 1)], 1),                        # C-O: remove the last atom
    ([0, 1], [(0, 1, 2)], 1),                        # C=O: decrement the double bond only
    ([0, 0], [(0, 1, 3)], 1),                        # C#C
    ([0, 0, 0], [(0, 1, 1), (1, 2, 1)], 1),          # chain: remove the last atom
    ([0, 0, 0], [(0, 1, 1), (0, 2, 1)], 1),          # atom 2 hangs on atom 0: remove it
    ([0, 0, 0], [(0, 1, 1), (0, 2, 1), (1, 2, 1)], 2),  # ring: delete (0, 2) or (1, 2), not (0, 1)
    ([0, 0, 0], [(0, 1, 2), (1, 2, 1)], 2),          # C=C-C: remove the last atom or decrement
    ([0, 0, 0], [(0, 1, 1), (1, 2, 2)], 1),          # C-C=C: the last atom has a double bond
])
def test_parent_counts_of_hand_built_graphs(atoms, bond_list, count):
    assert env3().num_parents(graph(atoms, bond_list)).tolist() == [count]


def test_graph_batch_of_two_graphs():
    env = env3()
    gb = env.graph_batch(build(env, [FIRST_C, ADD0_O], [FIRST_C]))
    assert gb["node_ptr"].dtype == gb["edge_index"].dtype == gb["pair_pos"].dtype == torch.int64
    assert gb["x"].tolist() == [0, 1, 0] and gb["batch"].tolist() == [0, 0, 1]
    assert gb["node_ptr"].tolist() == [0, 2, 3] and gb["num_atoms"].tolist() == [2, 1]
    assert gb["edge_index"].tolist() == [[0, 1], [1, 0]] and gb["edge_attr"].tolist() == [1, 1]
    assert gb["act_ptr"].tolist() == [0, 8, 13]
    assert gb["add_pos"].tolist() == [[3, 4], [5, 6], [11, 12]]  # graph 1's block of atom 0 starts at 8 + 3
    assert gb["pair_src"].tolist() == [0] and gb["pair_dst"].tolist() == [1] and gb["pair_pos"].tolist() == [7]
    three = env.graph_batch(build(env, [FIRST_C], [FIRST_C, ADD0_C, ADD1_C]))  # pairs (0, 1), (0, 2), (1, 2) of graph 1
    assert three["pair_src"].tolist() == [1, 1, 2] and three["pair_dst"].tolist() == [2, 3, 3]
    assert three["pair_pos"].tolist() == [5 + 7, 5 + 10, 5 + 11]  # graph 1's actions start at 5


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown atom types"):
        AtomMoleculeEnv(atoms=("C", "Xx"))
    with pytest.raises(ValueError, match="1 <= min_atoms <= max_atoms"):
        AtomMoleculeEnv(max_atoms=3, min_atoms=0)
    with pytest.raises(ValueError, match="1 <= min_atoms <= max_atoms"):
        AtomMoleculeEnv(max_atoms=3, min_atoms=4)
    assert AtomMoleculeEnv(max_atoms=3, min_atoms=3).min_atoms == 3
    with pytest.raises(ValueError, match="reward='x'; choose one of"):
        MoleculeReward("x")
    with pytest.raises(ValueError, match="does not parse"):
        MoleculeReward("qed").score("C((")
    with pytest.raises(ValueError, match=r"target SMILES \['C\(\('\] do not parse"):
        MoleculeReward("similarity", targets=("CCO", "C((")).score("CCO")


def _mw_term(mw, lo, hi):
    return 1.0 if lo <= mw <= hi else math.exp(-min(abs(mw - lo), abs(mw - hi)) / 20.0)


def test_molecular_weight_reward_inside_and_outside_the_window():
    ethanol = Descriptors.MolWt(Chem.MolFromSmiles("CCO"))  # 46.07
    assert MoleculeReward("mw", mw_window=(60, 160)).score("CCO") == pytest.approx(math.exp(-(60 - ethanol) / 20))
    assert MoleculeReward("mw", mw_window=(10, 30)).score("CCO") == pytest.approx(math.exp(-(ethanol - 30) / 20))
    assert MoleculeReward("mw", mw_window=(40, 50)).score("CCO") == 1.0
    assert MoleculeReward("mw", mw_window=(ethanol, 50)).score("CCO") == 1.0  # the window is closed
    assert MoleculeReward("mw", mw_window=(10, ethanol)).score("CCO") == 1.0


@pytest.mark.parametrize("smiles", ["CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC"])
def test_qed_sa_and_their_product(smiles):
    mol = Chem.MolFromSmiles(smiles)
    qed, sa = QED.qed(mol), (10.0 - sascorer.calculateScore(mol)) / 9.0
    mw = _mw_term(Descriptors.MolWt(mol), 60.0, 120.0)
    assert MoleculeReward("qed").score(smiles) == pytest.approx(qed)
    assert MoleculeReward("sa").score(smiles) == pytest.approx(sa)
    assert MoleculeReward("qed_sa_mw", mw_window=(60, 120)).score(smiles) == pytest.approx(qed * sa * mw)


def test_similarity_is_the_best_tanimoto_to_any_target():
    targets = ("CCCCl", "c1ccccc1", "CCO")
    r = MoleculeReward("similarity", targets=targets)
    assert r.score("c1ccccc1") == pytest.approx(1.0)
    morgan = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)  # Morgan radius 2, 2048 bits
    fp = morgan.GetFingerprint(Chem.MolFromSmiles("CCCO"))
    expected = max(DataStructs.TanimotoSimilarity(fp, morgan.GetFingerprint(Chem.MolFromSmiles(t))) for t in targets)
    assert 0 < expected < 1 and r.score("CCCO") == pytest.approx(expected)


def test_log_reward_is_the_log_of_the_reward_floored_at_r_min():
    r = MoleculeReward("mw", mw_window=(500, 600), r_min=1e-3)  # methane, 16 g/mol: exp(-484 / 20) << r_min
    ethanol = Descriptors.MolWt(Chem.MolFromSmiles("CCO"))
    near = math.exp(-(500 - ethanol) / 20)
    assert near < 1e-3
    torch.testing.assert_close(r.log_reward(["C", "CCO"]), torch.tensor([math.log(1e-3)] * 2))
    r2 = MoleculeReward("mw", mw_window=(60, 160), r_min=1e-3)
    torch.testing.assert_close(r2.log_reward(["CCO", "CCCCO"]),
                               torch.tensor([-(60 - ethanol) / 20, 0.0]), atol=1e-6, rtol=0)
    env = AtomMoleculeEnv(max_atoms=3, atoms=("C", "O"), reward="mw", mw_window=(60, 160))
    torch.testing.assert_close(env.log_reward(build(env, [FIRST_C, ADD0_C, ADD1_O])), r2.log_reward(["CCO"]))
    assert env.reward_of_smiles("CCO") == pytest.approx(math.exp(-(60 - ethanol) / 20))


def test_seh_floor_is_never_cut_by_r_min():
    assert MoleculeReward("seh").r_min == pytest.approx((0.1 / 8.0) ** 10, rel=1e-9, abs=0)  # 1e-3 would cut above it
    assert MoleculeReward("seh", r_min=1e-30).r_min == 1e-30
    assert MoleculeReward("qed", r_min=0.05).r_min == 0.05


def _tanimoto(a, b):
    return DataStructs.TanimotoSimilarity(fingerprint(Chem.MolFromSmiles(a)), fingerprint(Chem.MolFromSmiles(b)))


def test_molecule_metrics_on_a_hand_made_sample():
    smiles = ["CCO", "CCO", "CCCO", "c1ccccc1", None, "C(("]
    rewards = [0.9, 0.9, 0.95, 0.2, 0.0, 0.99]
    m = molecule_metrics(smiles, rewards, threshold=0.5)
    assert m["validity"] == pytest.approx(4 / 6) and m["uniqueness"] == pytest.approx(3 / 4)
    assert m["num_unique"] == 3.0
    for k in ("top10_reward", "top100_reward", "top1000_reward"):
        assert m[k] == pytest.approx((0.95 + 0.9 + 0.2) / 3)
    assert _tanimoto("CCO", "CCCO") < 0.7
    assert m["num_modes"] == 2.0  # CCO and CCCO are above 0.5 and not similar; benzene is below
    sims = [_tanimoto("CCO", "CCCO"), _tanimoto("CCO", "c1ccccc1"), _tanimoto("CCCO", "c1ccccc1")]
    assert m["top100_similarity"] == pytest.approx(sum(sims) / 3)
    assert molecule_metrics(smiles, rewards, threshold=0.5, max_similarity=0.0)["num_modes"] == 1.0
    assert molecule_metrics(smiles, rewards, threshold=0.9)["num_modes"] == 1.0  # strictly above: CCCO only
    assert molecule_metrics(smiles, rewards, threshold=0.95)["num_modes"] == 0.0
    similar = ["CCCCO", "CCCCCO"]  # Tanimoto 0.77: one mode at the default max_similarity 0.7, two above it
    assert molecule_metrics(similar, [0.9, 0.9], threshold=0.5)["num_modes"] == 1.0
    assert molecule_metrics(similar, [0.9, 0.9], threshold=0.5, max_similarity=0.8)["num_modes"] == 2.0
    at = _tanimoto("CCO", "CCCO")  # exactly at max_similarity: not a new mode
    assert molecule_metrics(["CCO", "CCCO"], [0.9, 0.9], threshold=0.5, max_similarity=at)["num_modes"] == 1.0
    # a repeated SMILES is one mode even when similarity alone would not merge it
    assert molecule_metrics(["CCO", "CCO"], [0.9, 0.9], threshold=0.5, max_similarity=1.01)["num_modes"] == 1.0


def test_molecule_metrics_top_k_averages_over_what_there_is():
    smiles = [f"C{'C' * k}O" for k in range(12)]
    rewards = [float((5 * k) % 12) for k in range(12)]  # a permutation of 0..11, not in SMILES order
    m = molecule_metrics(smiles, rewards, threshold=100.0)
    assert m["top10_reward"] == pytest.approx(sum(range(2, 12)) / 10)
    one = molecule_metrics(["CCO"], [0.5], threshold=0.1)
    assert (one["validity"], one["uniqueness"], one["top10_reward"], one["num_modes"]) == (1.0, 1.0, 0.5, 1.0)
    long = [f"C{'C' * k}O" for k in range(101)]  # 101 unique: the similarity uses the best 100 only
    lm = molecule_metrics(long, [float(k) for k in range(101)], threshold=100.0)
    top = [fingerprint(Chem.MolFromSmiles(s)) for s in long[::-1][:100]]
    sims = [x for i in range(1, 100) for x in DataStructs.BulkTanimotoSimilarity(top[i], top[:i])]
    assert lm["top100_similarity"] == pytest.approx(sum(sims) / len(sims))
    assert m["top100_reward"] == pytest.approx(sum(range(12)) / 12)
    empty = molecule_metrics([], [], threshold=0.5)
    assert empty == {"validity": 0.0, "uniqueness": 0.0, "num_unique": 0.0, "top10_reward": 0.0, "top100_reward": 0.0,
                     "top1000_reward": 0.0, "num_modes": 0.0, "top100_similarity": 0.0}


class _FixedSampler:
    def __init__(self, terminal):
        self.terminal = terminal

    def sample(self, n, epsilon):
        assert epsilon == 0.0, "evaluation must sample without exploration"
        assert n == self.terminal.shape[0], "evaluation draws num_samples molecules"
        return None, self.terminal, None


def test_evaluate_sampler_reports_the_metrics_of_greedy_samples():
    env = AtomMoleculeEnv(max_atoms=3, atoms=("C", "O"), reward="mw", mw_window=(40, 50), mode_threshold=0.5)
    terminal = build(env, [FIRST_C, ADD0_C, ADD1_O], [FIRST_C, ADD0_C, ADD1_O], [FIRST_C])
    out = env.evaluate_sampler(_FixedSampler(terminal), num_samples=3)
    expected = molecule_metrics(["CCO", "CCO", "C"], [1.0, 1.0, math.exp(-(40 - Descriptors.MolWt(
        Chem.MolFromSmiles("C"))) / 20)], 0.5)
    assert out == pytest.approx({f"eval/{k}": v for k, v in expected.items()})
    assert out["eval/num_modes"] == 1.0


def test_defaults_and_options_reach_the_reward():
    env = AtomMoleculeEnv()
    assert (env.N, env.atom_types, env.min_atoms, env.mode_threshold) == (9, ["C", "N", "O", "F"], 1, 0.7)
    r = env.rewarder
    assert (r.name, r.targets, r.mw_window, r.r_min, r.seh_path) == ("qed_sa_mw", list(DEFAULT_TARGETS), (60.0, 160.0),
                                                                     1e-3, None)
    plain = MoleculeReward()
    assert (plain.name, plain.mw_window, plain.r_min) == ("qed_sa_mw", (60.0, 160.0), 1e-3)
    assert AtomMoleculeEnv(reward="seh", seh_path="weights.pt").rewarder.seh_path == "weights.pt"
    with pytest.raises(ValueError, match="reward='x'; choose one of qed, sa, mw, qed_sa_mw, similarity, seh or a function 'pkg.mod:func'$"):
        MoleculeReward("x")


def test_more_atom_types_than_atoms():
    env = AtomMoleculeEnv(max_atoms=2, atoms=("C", "N", "O", "F"), reward="mw")  # type indices up to 3 > N - 1
    assert env.forward_mask(env.reset(1)).tolist() == [False, True, True, True, True]
    one_f = env.step(env.reset(1), torch.tensor([4]))  # a fluorine: valence 1
    assert env.forward_mask(one_f).tolist() == [True, False, False, False, False, True, True, True, True]
    two = env.step(env.step(env.reset(1), torch.tensor([1])), torch.tensor([8]))  # C then F on it: full
    assert env.forward_mask(two).tolist() == [True] + [False] * 4 + [False] * 4 + [False] * 4 + [False]
    assert env.smiles(two) == ["CF"]


def test_seh_scores_come_from_the_proxy_with_the_open_stems():
    r = MoleculeReward("seh")
    mol = Chem.MolFromSmiles("c1ccccc1CCO")
    plain, stemmed = r.score_mols([mol]), r.score_mols([mol], [[7]])
    assert plain == r.seh_proxy().reward([mol], None) and stemmed == r.seh_proxy().reward([mol], [[7]])
    assert stemmed != plain and 0 < plain[0] < 1
    assert r.score("c1ccccc1CCO") == pytest.approx(plain[0])


def test_seh_floor_value():
    assert MoleculeReward("seh", r_min=1.0).r_min == pytest.approx(9.313225746154785e-20, rel=1e-9, abs=0)  # (1/80)^10


def test_bond_orders_reach_the_molecule():
    env = env3()
    assert env.smiles(graph([0, 1], [(0, 1, 2)])) == ["C=O"]
    assert env.smiles(graph([0, 0], [(0, 1, 3)])) == ["C#C"]
    assert env.smiles(graph([0, 0, 1], [(0, 1, 1), (1, 2, 2)])) == ["CC=O"]


def test_fingerprints_are_morgan_radius_2_with_2048_bits():
    morgan = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    for smiles in ("CC(=O)Nc1ccc(O)cc1", "CC(=O)Oc1ccccc1C(=O)O"):
        mol = Chem.MolFromSmiles(smiles)
        assert fingerprint(mol) == morgan.GetFingerprint(mol)
