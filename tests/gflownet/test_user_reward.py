"""`env.kwargs.reward=pkg.mod:func` on the molecule envs: the function scores batches of RDKit Mols,
`reward_exponent` raises it to a power, bad returns are one line naming the function, the run is
filed under the function's name, and a GFlowNet learns from it."""

import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from rlx.algos.gflownet import GFlowNet, GFlowNetConfig
from rlx.algos.sampler_baselines import UniformSampler
from rlx.core.errors import EnvError
from rlx.envs.fragments import FragmentMoleculeEnv
from rlx.envs.hypergrid import HyperGrid
from rlx.envs.molecules import AtomMoleculeEnv, MoleculeReward, check_molecule_reward, labelled_env_name
from rlx.models.graph_nets import graph_policy
from rlx.train import compose_config, main

pytest.importorskip("rdkit")
FN = "tests.gflownet.user_rewards"


def _oxygens(env, states):
    return torch.tensor([s.count("O") for s in env.smiles(states)], dtype=torch.float32)


def test_a_user_reward_and_its_exponent_give_log_r():
    env = AtomMoleculeEnv(max_atoms=5, reward=f"{FN}:heavy_atoms", reward_exponent=2)
    _, terminal, log_r = UniformSampler(env).sample(32)
    n = env.num_atoms(terminal).float()
    assert torch.allclose(log_r, 2 * (n / 10).log(), atol=1e-6)  # log R = exponent * log f(x)
    assert env.reward_of_smiles(env.smiles(terminal)[0]) == pytest.approx(float((n[0] / 10) ** 2))


def test_a_tensor_return_on_the_fragment_env():
    env = FragmentMoleculeEnv(max_blocks=3, reward=f"{FN}:oxygens", r_min=1e-3)
    _, terminal, log_r = UniformSampler(env).sample(16)
    assert torch.allclose(log_r, (0.05 + _oxygens(env, terminal)).log(), atol=1e-6)


def test_scores_are_batched_and_cached(monkeypatch):
    import tests.gflownet.user_rewards as rewards

    calls = []
    monkeypatch.setattr(rewards, "heavy_atoms", lambda mols: calls.append(len(mols)) or [1.0] * len(mols))
    env = AtomMoleculeEnv(max_atoms=5, reward=f"{FN}:heavy_atoms")
    env.rewarder.log_reward(["CCO", "CC", "CCO", "C"])
    env.rewarder.log_reward(["CC", "CCC"])
    assert calls == [3, 1]  # one call per batch, for the molecules not scored before


@pytest.mark.parametrize("name, says", [
    ("one_short", "returned shape (3,) for 4 molecules; it must return one value per molecule ([4])"),
    ("with_nan", "returned a non-finite value (NaN/inf) for 4 of 4 molecules"),
    ("negative", ("returned a negative value (-1); a GFlowNet samples in proportion to R(x) and takes log R, so R(x) "
                  "must be >= 0 (shift or exp it)")),
    ("not_numbers", "returned list; it must return a list of floats or a Tensor [n]"),
])
def test_bad_returns_are_one_line_naming_the_function(name, says):
    env = AtomMoleculeEnv(reward=f"{FN}:{name}")
    with pytest.raises(EnvError) as err:
        env.rewarder.log_reward(["CCO", "CC", "CCC", "C"])
    assert str(err.value).startswith(f"reward {FN}:{name} ") and says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, says", [
    ({"reward": f"{FN}:absent"}, "has no attribute 'absent'"),
    ({"reward": "qed_sa"}, "choose one of qed, sa, mw, qed_sa_mw, similarity, seh or a function 'pkg.mod:func'"),
    ({"reward_exponent": 0}, "reward_exponent=0: must be a positive number"),
    ({"reward_exponent": math.inf}, "reward_exponent=inf: must be a positive number"),
    ({"reward": f"{FN}:NOT_CALLABLE"}, f"reward='{FN}:NOT_CALLABLE' is not callable; it must be func(mols) -> list[float] [n]"),
])
def test_bad_settings_are_refused(kwargs, says):
    with pytest.raises(ValueError) as err:
        AtomMoleculeEnv(**kwargs)
    assert says in str(err.value)


def test_the_run_is_labelled_with_the_reward(tmp_path):
    assert main(["algo=gflownet_molecules", "env=molecules_atom", f"env.kwargs.reward={FN}:oxygens",
                 "env.kwargs.reward_exponent=2", "env.kwargs.max_atoms=4", "trainer.total_steps=64",
                 "algo.eval_samples=16", f"trainer.root={tmp_path}", "trainer.progress=false"]) == 0
    run = next((tmp_path / "gflownet_molecules").iterdir())
    assert run.name == "molecules_atom_oxygens"  # not the preset's molecules_atom_qed_sa_mw
    saved = yaml.safe_load(next(run.iterdir()).joinpath("config.yaml").read_text())
    assert saved["env"]["name"] == "molecules_atom_oxygens"
    assert saved["env"]["kwargs"]["reward"] == f"{FN}:oxygens" and saved["env"]["kwargs"]["reward_exponent"] == 2
    # a built-in reward given on the command line renames the run as well; a name of the user's own is kept
    assert compose_config(["algo=gflownet", "env=molecules_fragments_seh", "env.kwargs.reward=qed"]).env.name \
        == "molecules_fragments_qed"
    assert labelled_env_name("my_run", f"{FN}:oxygens") == "my_run"


def test_a_missing_function_is_refused_before_any_work(tmp_path, capsys):
    assert main(["algo=gflownet_molecules", "env=molecules_atom", f"env.kwargs.reward={FN}:absent",
                 f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"module '{FN}' has no attribute 'absent'" in line
    assert not any(tmp_path.iterdir())


def test_a_bad_return_in_a_run_stops_it_in_one_line(tmp_path, capsys):
    assert main(["algo=gflownet_molecules", "env=molecules_atom", f"env.kwargs.reward={FN}:negative",
                 "trainer.total_steps=64", f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"reward {FN}:negative returned a negative value" in line
    assert not list(tmp_path.rglob("*.pt"))


def test_a_gflownet_learns_a_user_reward():
    """TB on 3-atom C/O molecules with R = (0.05 + #O)^2: the sampled molecules gain oxygens."""
    torch.manual_seed(0)
    env = AtomMoleculeEnv(max_atoms=3, atoms=("C", "O"), reward=f"{FN}:oxygens", reward_exponent=2)
    cfg = GFlowNetConfig(objective="tb", batch_size=32, lr=1e-3, lr_log_z=0.1, hidden=32, num_layers=2)
    learner = GFlowNet(cfg, env, graph_policy(env, cfg.hidden, cfg.num_layers, cfg.encoder))
    oxygens = []
    for _ in range(40):
        store, terminal, log_r = learner.sample(cfg.batch_size)
        learner.update(store.to_batch(log_reward=log_r))
        oxygens.append(float(_oxygens(env, terminal).mean()))
    first, last = sum(oxygens[:5]) / 5, sum(oxygens[-5:]) / 5
    assert last > first + 0.3, (first, last)


def test_user_values_are_kept_in_float64_and_zero_is_allowed():
    """R(x) = 0 is a valid reward (log R is floored at r_min); values are read as float64."""
    reward = MoleculeReward(f"{FN}:exact", r_min=1e-3)
    assert reward.score_smiles(["CCO", "CC", "CCC", "C"]) == [0.0, 0.1, 1 / 3, 2.0]
    log_r = reward.log_reward(["CCO", "CC", "CCC", "C"])
    assert log_r.dtype == torch.float32
    torch.testing.assert_close(log_r, torch.tensor([1e-3, 0.1, 1 / 3, 2.0]).log())


def test_the_seh_floor_follows_the_exponent():
    """sEH's own floor (0.1 / 8)^10 is raised to the exponent like every reward (no weights are loaded)."""
    assert MoleculeReward("seh", exponent=2.0).r_min == ((0.1 / 8.0) ** 10) ** 2
    assert MoleculeReward("seh", r_min=1e-30).r_min == 1e-30


def test_the_config_check_is_for_molecule_envs_with_a_string_reward():
    """A non-callable `pkg.mod:attr` is refused in one line before any work; other env classes, and a
    molecule env without a reward setting, are left as they are."""
    cfg = SimpleNamespace(kwargs={"reward": f"{FN}:NOT_CALLABLE"}, name="molecules_atom_qed")
    with pytest.raises(EnvError) as err:
        check_molecule_reward(cfg, AtomMoleculeEnv)
    assert str(err.value) == (f"env.kwargs.reward={FN}:NOT_CALLABLE is not callable; it must be "
                              "func(mols: list[Mol]) -> list[float]")
    check_molecule_reward(cfg, HyperGrid)  # not a molecule env: no check, no renaming
    other = SimpleNamespace(kwargs={"reward": "sa"}, name="grid_qed")
    check_molecule_reward(other, HyperGrid)
    assert other.name == "grid_qed"
    unset = SimpleNamespace(kwargs={}, name="molecules_atom_qed")
    check_molecule_reward(unset, AtomMoleculeEnv)
    assert unset.name == "molecules_atom_qed"
    check_molecule_reward(other, AtomMoleculeEnv)
    assert other.name == "grid_sa"
