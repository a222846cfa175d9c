"""sEH proxy: our re-implementation equals torch-geometric's NNConv/GRU/Set2Set with the same
weights, loads with numpy only, fails in one line on bad files, and scores fragment molecules."""


import numpy as np
import pytest
import torch
from rdkit import Chem

from rlx.envs.seh_proxy import SEHProxy, atom_graph
from rlx.models.seh_proxy import SHAPES

from rlx import data

WEIGHTS, BLOCKS = data.path(data.SEH_WEIGHTS), data.path(data.FRAGMENT_LIBRARIES["PDB_105"])
SMILES = ["O=C(NC1CCCCC1)NC12CC3CC(CC(C3)C1)C2", "c1ccccc1", "C", "O=c1[nH]cnc2[nH]cnc12", "C[NH3+]", "O=S(=O)(O)c1ccc(Br)cc1"]


def _pyg_reference(params, mol, stems):
    """The architecture assembled from torch-geometric modules (NNConv root weight as its Linear)."""
    from torch_geometric.nn import NNConv, Set2Set

    t = [torch.tensor(p, dtype=torch.float64) for p in params]
    net = torch.nn.Sequential(torch.nn.Linear(4, 128), torch.nn.LeakyReLU(), torch.nn.Linear(128, 4096)).double()
    conv, gru, s2s = NNConv(64, 64, net, aggr="mean").double(), torch.nn.GRU(64, 64).double(), Set2Set(64, 3).double()
    with torch.no_grad():
        for mod, names, idx in [(net[0], ("weight", "bias"), (4, 5)), (net[2], ("weight", "bias"), (6, 7)),
                                (conv.lin, ("weight",), (2,)), (conv, ("bias",), (3,)),
                                (gru, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), (8, 9, 10, 11)),
                                (s2s.lstm, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), (16, 17, 18, 19))]:
            for n, i in zip(names, idx):
                getattr(mod, n).copy_(t[i])
        x, ei, ea = atom_graph(mol, stems)
        out = torch.nn.functional.leaky_relu(x @ t[0].T + t[1])
        h = out[None]
        for _ in range(12):
            m = torch.nn.functional.leaky_relu(conv(out, ei, ea))
            out, h = gru(m[None], h)
            out = out[0]
        return float(s2s(out, torch.zeros(x.shape[0], dtype=torch.long)) @ t[20][0] + t[21][0])


def test_matches_torch_geometric_modules_with_the_same_weights():
    with np.load(WEIGHTS, allow_pickle=False) as d:
        params = [d[f"p{i:02d}"] for i in range(22)]
    proxy = SEHProxy(params)
    mols = [Chem.MolFromSmiles(s) for s in SMILES]
    stems = [[1, 2], [0], [], [3], [0], [4]]
    ours = proxy(mols, stems)  # one batch: the per-graph readout must not mix molecules
    ref = [_pyg_reference(params, m, s) for m, s in zip(mols, stems)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-9)
    assert not torch.allclose(SEHProxy(params, root_transposed=True)(mols, stems), ours)


def test_scores_are_in_the_published_range_and_reward_scaling():
    proxy = SEHProxy.load(WEIGHTS)
    mols = [Chem.MolFromSmiles(s) for s in SMILES]
    s = proxy(mols)
    assert s[0] == pytest.approx(3.8351, abs=1e-3) and s[1] == pytest.approx(0.7811, abs=1e-3)  # our own pinned values
    assert s[0] > s[1] > s[2]  # the adamantyl urea sEH inhibitor over benzene over methane
    r = proxy.reward(mols)
    assert r == pytest.approx(((s.clamp_min(0.1) / 8) ** 10).tolist())
    assert r[2] == pytest.approx((0.1 / 8) ** 10)  # methane scores below 0.1: the floor


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SEHProxy.load(tmp_path / "none.npz")
    arrays = {f"p{i:02d}": np.zeros(s) for i, s in enumerate(SHAPES)}
    arrays["p02"] = np.zeros((3, 3))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="unexpected shapes"):
        SEHProxy.load(tmp_path / "bad.npz")
    del arrays["p21"]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing arrays \['p21'\]"):
        SEHProxy.load(tmp_path / "short.npz")


def test_fragment_env_with_seh_reward():
    from rlx.algos.gflownet import sample_trajectories
    from rlx.models.graph_nets import FragmentPolicy
    from rlx.envs.fragments import FragmentMoleculeEnv

    env = FragmentMoleculeEnv(library="PDB_105", reward="seh", max_blocks=5)  # the packaged data, no paths
    torch.manual_seed(0)
    _, terminal, log_r = sample_trajectories(env, FragmentPolicy(env, 16, 1), 64, 0.0, torch.Generator().manual_seed(0))
    mols, stems = env.molecules(terminal)
    scores = env.rewarder.seh_proxy()(mols, stems)
    assert torch.allclose(log_r, ((scores.clamp_min(0.1) / 8) ** 10).float().log())  # no r_min cut above the floor
    assert -1.0 < float(scores.min()) and float(scores.max()) < 9.0 and float(scores.std()) > 0.5


def test_seh_preset_runs_from_packaged_data(tmp_path):
    """`env=molecules_fragments_seh` needs no file outside the package (no ../shared, no paths)."""
    from rlx.train import compose_config

    cfg = compose_config(["algo=gflownet", "env=molecules_fragments_seh"])
    assert cfg.env.kwargs["library"] == "PDB_105" and cfg.env.kwargs["seh_path"] is None
    from rlx.envs.fragments import FragmentMoleculeEnv

    env = FragmentMoleculeEnv(**cfg.env.kwargs)
    assert len(env.lib) == 105 and env.rewarder.seh_proxy() is not None
