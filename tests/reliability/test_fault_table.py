"""Fault injection: bad command-line settings, broken custom envs and malformed datasets. Each
row: the exit code of `rlx.train.main`, exactly one `rlx.train:` line on stderr (the "writing"
line of a started run aside), and nothing left on disk when the run is refused."""

import json
import re

import gymnasium
import h5py
import numpy as np
import pytest
import torch

from rlx.envs import datasets as ds
from rlx.train import main

Q = ["trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0", "trainer.eval_episodes=1"]
PPO = ["algo=ppo", "env.num_envs=2", "algo.num_steps=16", "trainer.total_steps=64", *Q]
IQL = ["algo=iql", "env=pendulum-tiny", "algo.hidden=[16]", "algo.batch_size=16", "trainer.total_steps=20", *Q]
GFN = ["algo=gflownet", "env=hypergrid_small", "algo.hidden=16", "algo.batch_size=4", "algo.eval_samples=50",
       "trainer.total_steps=16", *Q]

BAD_SETTINGS = [
    # (algo, overrides, text in the one line)
    ("ppo", ["algo.num_minibatches=0"], "algo.num_minibatches=0 is out of range"),
    ("ppo", ["algo.num_steps=0"], "algo.num_steps=0 is out of range"),
    ("ppo", ["algo.update_epochs=0"], "algo.update_epochs=0"),
    ("ppo", ["algo.lr=-0.1"], "algo.lr=-0.1 is out of range: it must be > 0"),
    ("ppo", ["algo.lr=0"], "algo.lr=0.0"),
    ("ppo", ["algo.gamma=2"], "algo.gamma=2.0"),
    ("ppo", ["algo.gamma=0"], "algo.gamma=0.0"),
    ("ppo", ["algo.gae_lambda=1.5"], "algo.gae_lambda=1.5"),
    ("ppo", ["algo.clip_coef=0"], "algo.clip_coef=0.0"),
    ("ppo", ["algo.ent_coef=-1"], "algo.ent_coef=-1.0"),
    ("ppo", ["algo.max_grad_norm=-1"], "algo.max_grad_norm=-1.0"),
    ("ppo", ["algo.activation=relux"], "algo.activation='relux' is not one of"),
    ("ppo", ["algo.hidden=[64,0]"], "algo.hidden=0"),
    ("ppo", ["algo.target_kl=0"], "algo.target_kl=0.0"),
    ("ppo", ["trainer.total_steps=0"], "trainer.total_steps=0"),
    ("ppo", ["trainer.total_steps=-5"], "trainer.total_steps=-5"),
    ("ppo", ["trainer.eval_episodes=0"], "trainer.eval_episodes=0"),
    ("ppo", ["trainer.eval_every=-1"], "trainer.eval_every=-1"),
    ("ppo", ["trainer.checkpoint_every=-1"], "trainer.checkpoint_every=-1"),
    ("ppo", ["trainer.log_every=0"], "trainer.log_every=0"),
    ("ppo", ["trainer.threads=-2"], "trainer.threads=-2"),
    ("ppo", ["trainer.device=tpu9"], "trainer.device='tpu9'"),
    ("ppo", ["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite='ignore'"),
    ("ppo", ["trainer.distributed=mpi"], "trainer.distributed='mpi'"),
    ("ppo", ["env.num_envs=0"], "env.num_envs=0"),
    ("ppo", ["env.max_episode_steps=0"], "env.max_episode_steps=0"),
    ("ppo", ["env.vectorization=threads"], "env.vectorization='threads'"),
    ("ppo", ["seed=-1"], "seed=-1 is out of range"),
    ("ppo", ["reward.mode=inverse"], "reward.mode='inverse'"),
    ("ppo", ["reward.seed=-3"], "reward.seed=-3"),
    ("ppo", ["env.kwargs.nope=1"], "nope"),
    ("ppo", ["env=CartPol-v1"], "unknown env 'CartPol-v1'"),
    ("ppo", ["env.entry_point=nomodule:Env"], "cannot import module 'nomodule'"),
    ("ppo", ["env.entry_point=tests.reliability.broken_envs:Nope"], "has no attribute 'Nope'"),
    ("iql", ["algo.expectile=1.5"], "algo.expectile=1.5"),
    ("iql", ["algo.expectile=0"], "algo.expectile=0.0"),
    ("iql", ["algo.batch_size=0"], "algo.batch_size=0"),
    ("iql", ["algo.tau=0"], "algo.tau=0.0"),
    ("iql", ["algo.critic_lr=-1"], "algo.critic_lr=-1.0"),
    ("iql", ["algo.policy_delay=0"], "algo.policy_delay=0"),
    ("iql", ["env.dataset=../../etc/passwd"], "must be a plain name"),
    ("iql", ["env.dataset=nope"], "dataset 'nope' not found"),
    ("gflownet", ["algo.objective=xx"], "algo.objective='xx' is not one of tb, db, subtb, fm"),
    ("gflownet", ["algo.batch_size=0"], "algo.batch_size=0"),
    ("gflownet", ["algo.lr=-1"], "algo.lr=-1.0"),
    ("gflownet", ["algo.epsilon=1.5"], "algo.epsilon=1.5"),
    ("gflownet", ["algo.replay_fraction=2"], "algo.replay_fraction=2.0"),
    ("gflownet", ["algo.encoder=gat"], "algo.encoder='gat'"),
    ("gflownet", ["env.kwargs.ndim=0"], "ndim"),
    ("cppo", ["algo.lb=0"], "algo.lb=0.0"),
    ("cppo", ["algo.learned_tau=0"], "algo.learned_tau=0"),
    ("cppo", ["algo.gamma=1.5"], "algo.gamma=1.5"),
    ("cppo", ["algo.batch_size=0"], "algo.batch_size=0"),
    ("ddpo", ["algo.num_samples=0"], "algo.num_samples=0"),
    ("ddpo", ["algo.eta=0"], "algo.eta=0.0"),
    ("ddpo", ["algo.timestep_fraction=0"], "algo.timestep_fraction=0.0"),
    ("ddpo", ["algo.clip_range=-1"], "algo.clip_range=-1.0"),
    ("hilp", ["algo.expectile=1"], "algo.expectile=1.0"),
    ("hilp", ["algo.latent_dim=0"], "algo.latent_dim=0"),
    ("hilp", ["algo.p_trajgoal=1.5"], "algo.p_trajgoal=1.5"),
    ("hilp", ["algo.goal_discount=1"], "algo.goal_discount=1.0"),
]
BASE = {"ppo": PPO, "iql": IQL, "gflownet": GFN, "cppo": ["algo=cppo", *Q], "ddpo": ["algo=ddpo", *Q],
        "hilp": ["algo=hilp", *Q]}


def _lines(capsys):
    return [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("rlx.train:")]


@pytest.mark.parametrize("algo,overrides,text", BAD_SETTINGS, ids=[" ".join(o) for _, o, _ in BAD_SETTINGS])
def test_bad_setting_is_one_line_exit_2_nothing_written(algo, overrides, text, tmp_path, capsys, offline_data):
    root = tmp_path / "runs"
    code = main([*BASE[algo], *overrides, f"trainer.root={root}"])
    lines = _lines(capsys)
    assert code == 2 and lines[-1].startswith("rlx.train: error:") and text in lines[-1], lines
    assert len([ln for ln in lines if not ln.startswith("rlx.train: writing")]) == 1
    assert not root.exists() or not any(root.rglob("*")), f"left behind: {list(root.rglob('*'))}"


BROKEN = "tests.reliability.broken_envs"
BROKEN_ENVS = [
    # (env, exit code, text in the last line)
    ("RaisesMidRun", 1, "raised ValueError in step() at global step 58"),
    ("NaNRewardMidRun", 1, "non-finite (NaN/inf) reward at global step 58"),
    ("InfObsMidRun", 1, "non-finite (NaN/inf) observation at global step 60"),
    ("WrongObsShape", 2, "failed gymnasium's env checker"),
    ("WrongObsDtype", 2, "failed gymnasium's env checker"),
    ("NaNOnReset", 2, "env.reset()` is not within the observation space"),
    ("ResetRaises", 2, "no licence server"),
    ("NoSpaces", 2, "failed gymnasium's env checker"),
    ("StepReturnsFour", 2, "failed gymnasium's env checker"),
    ("ConstructorNeedsArg", 2, "missing 1 required positional argument: 'size'"),
    ("ObsOutsideSpace", 2, "failed gymnasium's env checker"),
    ("not_an_env_factory", 2, "not a gymnasium.Env"),
]


@pytest.mark.parametrize("env,code,text", BROKEN_ENVS, ids=[e for e, _, _ in BROKEN_ENVS])
def test_broken_custom_env(env, code, text, tmp_path, capsys):
    root = tmp_path / "runs"
    got = main([*PPO, f"env.entry_point={BROKEN}:{env}", "trainer.checkpoint_every=1", f"trainer.root={root}"])
    lines = _lines(capsys)
    assert got == code and text in lines[-1], lines
    assert len([ln for ln in lines if not ln.startswith("rlx.train: writing")]) == 1
    if code == 2:
        assert not root.exists() or not any(root.rglob("*"))
    else:  # filed under the env it ran, with its traceback and last checkpoint
        (run,) = (root / "ppo" / env).iterdir()
        assert (run / "error.txt").is_file() and (run / "checkpoints" / "last.pt").is_file()


def test_env_that_never_ends_still_finishes_its_evaluation(tmp_path, capsys, monkeypatch):
    from rlx.core import loops

    monkeypatch.setattr(loops, "EVAL_MAX_STEPS", 300)
    assert main([*PPO, f"env.entry_point={BROKEN}:NeverEnds", f"trainer.run_dir={tmp_path / 'r'}"]) == 0
    assert "evaluation episodes still running after 300 steps were cut there" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["eval/length_mean"] == 300


# ------------------------------------------------------------------------------------------ datasets


def _corrupt(path, key, fn):
    with h5py.File(path, "r+") as h:
        data = fn(np.asarray(h[key]).copy()) if key in h else None
        del h[key]
        if data is not None:
            h[key] = data


def _set_attr(path, value):
    with h5py.File(path, "r+") as h:
        h.attrs["rlx_metadata"] = value


def _nan_row(a, row=7):
    a = a.astype(np.float64)
    a[row] = np.nan
    return a


BAD_DATASETS = [
    ("observations", lambda a: _nan_row(a), "key 'observations' has NaN/inf at row 7"),
    ("rewards", lambda a: np.where(np.arange(len(a)) == 11, np.inf, a), "key 'rewards' has NaN/inf at row 11"),
    ("actions", lambda a: _nan_row(a, 3), "key 'actions' has NaN/inf at row 3"),
    ("next_observations", lambda a: _nan_row(a, 5), "key 'next_observations' has NaN/inf at row 5"),
    ("actions", lambda a: np.where(np.arange(len(a))[:, None] == 9, 7.0, a), "action at row 9"),
    ("observations", lambda a: np.where(np.arange(len(a))[:, None] == 6, 9.0, a), "observation at row 6"),
    ("observations", lambda a: np.concatenate([a, a[:, :2]], 1), "obs rows have 5 values but the env's observation"),
    ("actions", lambda a: np.concatenate([a, a], 1), "action rows have 2 values but the env's action"),
    ("terminals", lambda a: np.where(np.arange(len(a)) == 4, 2, a.astype(np.int64)), "key 'terminals' must hold 0/1"),
    ("timeouts", lambda a: a.astype(np.float64) * 0.5, "key 'timeouts' must hold 0/1"),
    ("rewards", lambda a: a[:-3], "arrays have different lengths"),
    ("terminals", lambda a: None, "missing key 'terminals'"),
    ("attr", "{not json", "attribute 'rlx_metadata' is not valid JSON"),
    ("attr", "[1, 2]", "must be a JSON object"),
    ("file", b"not an hdf5 file", "is not a readable HDF5 file"),
]


@pytest.mark.parametrize("key,change,text", BAD_DATASETS, ids=[t for _, _, t in BAD_DATASETS])
def test_malformed_hdf5_dataset(key, change, text, tmp_path, capsys, offline_data):
    path = offline_data / "pendulum-tiny.hdf5"
    if key == "attr":
        _set_attr(path, change)
    elif key == "file":
        path.write_bytes(change)
    else:
        _corrupt(path, key, change)
    root = tmp_path / "runs"
    code = main([*IQL, f"trainer.root={root}"])
    lines = _lines(capsys)
    assert code == 2 and text in lines[-1] and lines[-1].startswith("rlx.train: error:"), lines
    assert not root.exists() or not any(root.rglob("*"))


@pytest.mark.parametrize("what,text", [("obs", "'observations' has NaN/inf at row 2"),
                                       ("action", "action at row")])
def test_malformed_minari_dataset(what, text, tmp_path, monkeypatch, capsys, _tiny_dataset):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    small = ds.OfflineDataset(_tiny_dataset.episodes.select([0, 1]), _tiny_dataset.metadata)
    small.episodes.data[what][2] = float("nan") if what == "obs" else 5.0
    ds.save_minari(f"rlx/pendulum/bad-{what}-v0", small)
    root = tmp_path / "runs"
    code = main([*IQL, f"env.dataset=minari:rlx/pendulum/bad-{what}-v0", f"trainer.root={root}"])
    lines = _lines(capsys)
    assert code == 2 and text in lines[-1], lines
    assert not root.exists() or not any(root.rglob("*"))


def test_row_both_terminal_and_timeout_is_a_terminal(tmp_path, _tiny_dataset):
    """The documented rule (docs/offline.md), with and without next_observations."""
    path = ds.write_hdf5(tmp_path / "d.hdf5", _tiny_dataset)
    n = _tiny_dataset.episodes.data.shape[0]
    for drop_next in (False, True):
        with h5py.File(path, "r+") as h:
            term, trunc = np.zeros(n, bool), np.zeros(n, bool)
            term[[4, 9]] = True
            trunc[[9, 20]] = True
            for key, a in (("terminals", term), ("timeouts", trunc)):
                del h[key]
                h[key] = a
            if drop_next and "next_observations" in h:
                del h["next_observations"]
        d = ds.read_hdf5(path).episodes.data
        # without next_observations only the timeout row 20 and the unfinished last row are dropped
        assert d.shape[0] == n - 2 * drop_next
        assert d["terminated"][[4, 9]].all() and not d["truncated"][[4, 9]].any()
        assert int(d["terminated"].sum()) == 2


def test_minari_row_both_terminal_and_truncated_is_a_terminal(tmp_path, monkeypatch, _tiny_dataset):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    small = ds.OfflineDataset(_tiny_dataset.episodes.select([0, 1]), _tiny_dataset.metadata)
    end = int(small.episodes.ptr[1]) - 1  # the last row of episode 0
    small.episodes.data["terminated"][end] = small.episodes.data["truncated"][end] = True
    ds.save_minari("rlx/pendulum/both-v0", small)
    d = ds.load_minari("rlx/pendulum/both-v0").episodes.data
    assert bool(d["terminated"][end]) and not bool(d["truncated"][end])
    assert int(d["terminated"].sum()) == 1 and int(d["truncated"].sum()) == 1  # episode 1 still ends by its time limit


@pytest.mark.parametrize("actions,text", [([[0.0], [2.0], [1.5]], "action at row 2 [1.5]"),
                                          ([[0.0], [3.0], [1.0]], "action at row 1 [3.0]"),
                                          ([[1.0], [-1.0], [1.0]], "action at row 1 [-1.0]"),
                                          ([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]], "action rows have 2 values")])
def test_discrete_action_space_needs_integer_actions_in_range(actions, text):
    from tensordict import TensorDict

    from rlx.core.buffers import EpisodeStore
    from rlx.core.errors import DatasetError

    n = len(actions)
    rows = TensorDict({"obs": torch.zeros(n, 2), "next_obs": torch.zeros(n, 2), "action": torch.tensor(actions),
                       "reward": torch.zeros(n), "terminated": torch.zeros(n, dtype=torch.bool),
                       "truncated": torch.zeros(n, dtype=torch.bool)}, batch_size=[n])
    data = ds.OfflineDataset(EpisodeStore.from_episodes([rows]), {})
    obs_space = gymnasium.spaces.Box(-1.0, 1.0, (2,))
    with pytest.raises(DatasetError, match=re.escape(text)):
        ds.check_spaces(data, obs_space, gymnasium.spaces.Discrete(3), "mine")
    rows["action"] = torch.tensor([[0.0], [1.0], [2.0]])  # in range: passes
    ds.check_spaces(ds.OfflineDataset(EpisodeStore.from_episodes([rows]), {}), obs_space,
                    gymnasium.spaces.Discrete(3), "mine")


def test_nan_weights_are_not_a_silent_success(tmp_path, capsys):
    """A divergent learner (inf learning rate): exit 3, never exit 0 with a NaN summary."""
    code = main([*PPO, "algo.lr=1e30", "trainer.total_steps=320", f"trainer.run_dir={tmp_path / 'r'}"])
    lines = _lines(capsys)
    assert code == 3 and "rlx.train: diverged: non-finite" in lines[-1], lines
    assert not (tmp_path / "r" / "summary.json").exists()
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True) if (
        tmp_path / "r" / "checkpoints" / "last.pt").exists() else None
    from rlx.core.loops import finite_state

    assert state is None or finite_state(state["learner"])


@pytest.mark.parametrize("name", ["../x", "/tmp/x", ".", "..", ".hidden", "a/b"])
def test_dataset_cli_refuses_path_like_names(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    assert ds.main(["random", "--env", "Pendulum-v1", "--name", name, "--steps", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be a plain name" in err[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "x.hdf5").exists()


@pytest.mark.parametrize("name,folder", [("..", "env"), (".", "env"), ("/etc", "_etc"), ("a/../b", "a_.._b")])
def test_path_like_env_names_stay_under_root(name, folder, tmp_path):
    from rlx.core.logging import make_run_dir

    run = make_run_dir(tmp_path, "ppo", name, 0)
    assert run.parent == tmp_path / "ppo" / folder


def test_entry_point_runs_are_filed_under_their_env():
    from rlx.train import compose_config

    assert compose_config([f"env.entry_point={BROKEN}:Line"]).env.name == "Line"
    assert compose_config([f"env.entry_point={BROKEN}:Line", "env.name=mine"]).env.name == "mine"


def test_attribution_runs_are_filed_under_their_dataset(tmp_path, monkeypatch):
    from rlx import train
    from rlx.core import logging

    made = []  # rlx.train.run imports make_run_dir from rlx.core.logging when it runs
    monkeypatch.setattr(logging, "make_run_dir", lambda root, algo, env, seed: made.append((algo, env)) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train.run(train.compose_config(["algo=attribution", f"trainer.root={tmp_path}"]))
    assert made == [("attribution", "gridworld")]
