import h5py
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.core.errors import DatasetError
from rlx.core.buffers import EpisodeStore
from rlx.envs import datasets as ds


def test_generated_episodes_are_well_formed(tiny_data):
    store = tiny_data.episodes
    d = store.data
    assert store.num_rows == 4000 and d["obs"].shape == (4000, 3) and d["action"].shape == (4000, 1)
    last = store.ptr[1:] - 1
    ends = d["terminated"] | d["truncated"]
    assert ends[last].all() and ends.sum() == store.num_episodes  # every episode ends exactly once
    assert not (d["terminated"] & d["truncated"]).any()
    # inside an episode, next_obs is the next row's obs
    inner = torch.ones(4000, dtype=torch.bool)
    inner[last] = False
    idx = torch.nonzero(inner).squeeze(-1)
    assert torch.allclose(d["next_obs"][idx], d["obs"][idx + 1])
    assert d["action"].abs().max() <= 2.0
    meta = tiny_data.metadata
    assert meta["ref_max_score"] > meta["ref_min_score"] + 500  # the controller is far better than random
    assert tiny_data.normalized_score(meta["ref_max_score"]) == pytest.approx(100.0)


def test_hdf5_round_trip_keeps_terminals_and_timeouts_distinct(tmp_path, tiny_data):
    d = tiny_data.episodes.data.clone()
    d["terminated"][10] = True  # a true terminal inside the data as well as time-limit truncations
    data = ds.OfflineDataset(ds.EpisodeStore.from_flat(d), tiny_data.metadata)
    path = ds.write_hdf5(tmp_path / "x.hdf5", data)
    with h5py.File(path) as h:
        assert set(ds.D4RL_KEYS) <= set(h) and h["timeouts"][:].sum() > 0 and h["terminals"][:].sum() == 1
    back = ds.read_hdf5(path)
    assert torch.equal(back.episodes.ptr, data.episodes.ptr)
    for key in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        assert torch.equal(back.episodes.data[key], data.episodes.data[key]), key
    assert back.metadata == data.metadata


def test_d4rl_v0_file_without_next_observations(tmp_path):
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    with h5py.File(tmp_path / "v0.hdf5", "w") as h:
        h["observations"], h["actions"] = obs, np.zeros((6, 1), np.float32)
        h["rewards"] = np.ones(6, np.float32)
        h["terminals"] = np.array([0, 1, 0, 0, 0, 0], bool)
        h["timeouts"] = np.array([0, 0, 0, 1, 0, 0], bool)
    data = ds.read_hdf5(tmp_path / "v0.hdf5").episodes
    # rows 3 (timeout, unknown next obs) and 5 (end of file) are dropped; rows 2 and 4 become truncations
    assert data.num_rows == 4 and data.ptr.tolist() == [0, 2, 3, 4]
    assert data.data["terminated"].tolist() == [False, True, False, False]
    assert data.data["truncated"].tolist() == [False, False, True, True]
    assert torch.equal(data.data["next_obs"][0], torch.as_tensor(obs[1]))


def test_malformed_and_missing_datasets_have_clear_errors(tmp_path, monkeypatch):
    with h5py.File(tmp_path / "bad.hdf5", "w") as h:
        for key in ("observations", "actions", "rewards", "terminals"):
            h[key] = np.zeros(3)
    with pytest.raises(DatasetError, match="missing key 'timeouts'"):
        ds.load_dataset(str(tmp_path / "bad.hdf5"))
    monkeypatch.setenv("RLX_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="python -m rlx.envs.datasets"):
        ds.load_dataset("hopper-medium")
    (tmp_path / "junk.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        ds.load_dataset(str(tmp_path / "junk.hdf5"))


def test_failed_write_leaves_the_old_file_intact(tmp_path, tiny_data, monkeypatch):
    path = ds.write_hdf5(tmp_path / "x.hdf5", tiny_data)
    before = path.read_bytes()
    broken = ds.OfflineDataset(tiny_data.episodes, {"bad": object()})  # metadata that cannot be JSON-encoded
    with pytest.raises(TypeError):
        ds.write_hdf5(path, broken)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_minari_round_trip(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    small = ds.OfflineDataset(tiny_data.episodes.select([0, 1, 2]), tiny_data.metadata)
    ds.save_minari("rlx/pendulum/tiny-v0", small)
    back = ds.load_dataset("minari:rlx/pendulum/tiny-v0")
    assert torch.equal(back.episodes.ptr, small.episodes.ptr)
    for key in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        assert torch.allclose(back.episodes.data[key].float(), small.episodes.data[key].float()), key
    assert back.metadata["env_id"] == "Pendulum-v1"
    assert back.metadata["ref_min_score"] == pytest.approx(small.metadata["ref_min_score"])
    with pytest.raises(DatasetError, match="not found"):
        ds.load_dataset("minari:rlx/pendulum/none-v0")


def test_mixture_concatenates_whole_episodes(tiny_data):
    a = ds.OfflineDataset(tiny_data.episodes.select([0, 1]), {"x": 1})
    b = ds.OfflineDataset(tiny_data.episodes.select([2]), {"y": 2})
    m = ds.mixture([a, b], {"behavior": "mix"})
    assert m.episodes.num_episodes == 3 and m.episodes.num_rows == a.episodes.num_rows + b.episodes.num_rows
    assert m.metadata["behavior"] == "mix" and m.metadata["x"] == 1



def test_checkpoint_policy_mode_and_samples(tmp_path, monkeypatch):
    """A saved PPO run gives its mode (repeatable) or samples of its own distribution (D4RL-style
    behavior); sampling stays in the action bounds and never moves the observation statistics;
    a learner without a distribution is a one-line error."""
    import gymnasium as gym

    from rlx import runs
    from rlx.train import main

    run = tmp_path / "run"
    assert main(["algo=ppo_mujoco", "env=Pendulum-v1", "env.num_envs=2", "algo.num_steps=32", "trainer.total_steps=128",
                 "trainer.eval_episodes=1", "trainer.eval_every=0", "trainer.progress=false",
                 "trainer.tensorboard=false", f"trainer.run_dir={run}"]) == 0
    learner, env_cfg, _ = runs.load_learner(run)
    monkeypatch.setattr(runs, "load_learner", lambda *a, **k: (learner, env_cfg, gym.make("Pendulum-v1")))
    assert learner.obs_rms is not None, "ppo_mujoco normalizes observations"
    stats = [t.clone() for t in (learner.obs_rms.mean, learner.obs_rms.var)]
    obs = torch.randn(256, 3) * 5
    mode, _ = runs.checkpoint_policy(run)
    sample, _ = runs.checkpoint_policy(run, stochastic=True)
    a, b = sample(obs), sample(obs)
    assert torch.equal(mode(obs), mode(obs))
    assert a.shape == (256, 1) and not torch.equal(a, b) and not a.requires_grad
    assert float(a.abs().max()) <= 2.0 and float((a - mode(obs)).abs().mean()) > 1e-3
    assert all(torch.equal(t, u) for t, u in zip(stats, (learner.obs_rms.mean, learner.obs_rms.var)))

    class NoDist:
        def act(self, obs, deterministic=False):
            return {"action": torch.zeros(obs.shape[0], 1)}

    monkeypatch.setattr(runs, "load_learner", lambda *a, **k: (NoDist(), env_cfg, gym.make("Pendulum-v1")))
    with pytest.raises(DatasetError, match="drop --stochastic"):
        runs.checkpoint_policy(run, stochastic=True)


def test_save_minari_rejects_a_bad_id_and_leaves_nothing(tmp_path, monkeypatch, tiny_data):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    small = ds.OfflineDataset(tiny_data.episodes.select([0]), tiny_data.metadata)
    for bad in ("pendulum-tiny", "rlx/pendulum-tiny", "rlx/tiny-vx"):
        with pytest.raises(ds.DatasetError, match="namespace/name-vN"):
            ds.save_minari(bad, small)
    assert not root.exists() or list(root.iterdir()) == []


def test_save_minari_failure_leaves_no_partial_folder(tmp_path, monkeypatch, tiny_data):
    import minari

    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    small = ds.OfflineDataset(tiny_data.episodes.select([0, 1]), tiny_data.metadata)
    ds.save_minari("rlx/pendulum/good-v0", small)

    def broken(*args, **kwargs):  # minari fails half-way: it has written files, then raises
        from minari.storage.datasets_root_dir import get_dataset_path

        (get_dataset_path(args[0]) / "data").mkdir(parents=True)
        (get_dataset_path(args[0]) / "data" / "main_data.hdf5").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ds.save_minari("rlx/pendulum/bad-v0", small)
    assert not (root / "rlx" / "pendulum" / "bad-v0").exists()
    assert [p.name for p in root.iterdir()] == ["rlx"]  # no staging folder left either
    monkeypatch.undo()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert list(minari.list_local_datasets()) == ["rlx/pendulum/good-v0"]  # the listing still works
    with pytest.raises(ds.DatasetError, match="already exists"):
        ds.save_minari("rlx/pendulum/good-v0", small)


def _hopper_like(n_episodes=3, length=5):
    """A synthetic dataset that says it was collected in Hopper-v5, with its own references."""
    eps = []
    for e in range(n_episodes):
        term = torch.zeros(length, dtype=torch.bool)
        term[-1] = e % 2 == 0
        eps.append(TensorDict({"obs": torch.randn(length, 11), "action": torch.rand(length, 3) * 2 - 1,
                               "reward": torch.ones(length), "next_obs": torch.randn(length, 11),
                               "terminated": term, "truncated": ~term & (torch.arange(length) == length - 1)},
                              batch_size=[length]))
    return ds.OfflineDataset(EpisodeStore.from_episodes(eps), {"env_id": "Hopper-v5", "ref_min_score": 10.0,
                                                               "ref_max_score": 410.0})


def test_d4rl_scale_for_d4rl_envs_and_local_scale_beside_it():
    data = _hopper_like()
    lo, hi = ds.D4RL_REF_SCORES["Hopper"]
    assert (lo, hi) == (-20.272305, 3234.3)  # d4rl/infos.py
    assert data.normalized_score(hi) == pytest.approx(100.0) and data.normalized_score(lo) == pytest.approx(0.0)
    assert data.normalized_score_local(410.0) == pytest.approx(100.0)
    assert ds.d4rl_reference("HalfCheetah-v4") == (-280.178953, 12135.0)
    assert ds.d4rl_reference("Walker2d-v5")[1] == 4592.3 and ds.d4rl_reference("Ant-v5")[0] == -325.6
    assert ds.d4rl_reference("Pendulum-v1") is None
    pend = ds.OfflineDataset(data.episodes, {"env_id": "Pendulum-v1", "ref_min_score": 0.0, "ref_max_score": 10.0})
    assert pend.normalized_score(5.0) == pend.normalized_score_local(5.0) == pytest.approx(50.0)


def test_exported_hdf5_reads_with_a_plain_d4rl_reader(tmp_path):
    """A reader written only against D4RL's format (h5py, the five keys, attrs), as d3rlpy/CORL do."""
    import h5py

    data = _hopper_like()
    path = ds.write_hdf5(tmp_path / "hopper-x.hdf5", data)
    with h5py.File(path, "r") as f:
        obs, act, rew = f["observations"][:], f["actions"][:], f["rewards"][:]
        terminals, timeouts = f["terminals"][:], f["timeouts"][:]
        lo, hi, env_id = f.attrs["ref_min_score"], f.attrs["ref_max_score"], f.attrs["env_id"]
    assert obs.shape == (15, 11) and obs.dtype == np.float32 and act.shape == (15, 3) and rew.shape == (15,)
    assert terminals.dtype == bool and terminals.sum() == 2 and timeouts.sum() == 1 and not (terminals & timeouts).any()
    assert env_id == "Hopper-v5"
    assert (lo, hi) == pytest.approx(ds.D4RL_REF_SCORES["Hopper"])  # a D4RL reader normalizes on D4RL's scale
    score = 100 * (rew[:5].sum() - lo) / (hi - lo)
    assert score == pytest.approx(data.normalized_score(5.0))
    back = ds.read_hdf5(path)  # rlx keeps the local references beside them
    assert back.metadata["ref_max_score"] == 410.0 and back.normalized_score_local(410.0) == pytest.approx(100.0)


def test_minari_export_carries_the_references(tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    ds.save_minari("rlx/hopper/x-v0", _hopper_like())
    stored = minari.load_dataset("rlx/hopper/x-v0")
    assert stored.spec.env_spec.id == "Hopper-v5"
    assert (stored.storage.metadata["ref_min_score"], stored.storage.metadata["ref_max_score"]) == pytest.approx(
        ds.D4RL_REF_SCORES["Hopper"])
    back = ds.load_dataset("minari:rlx/hopper/x-v0")
    assert back.metadata["ref_min_score"] == 10.0  # the local ones from the description
    assert back.normalized_score(3234.3) == pytest.approx(100.0)


def test_offline_extra_installs_minari_create():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("minari[create]") for r in extras["offline"])
