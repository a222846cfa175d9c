"""scripts/make_d4rl_family.py on a tiny budget: five datasets, resumable, D4RL-readable."""

import importlib.util
import json
from pathlib import Path

import h5py

from rlx.envs import datasets as ds

SCRIPT = Path(__file__).parents[2] / "scripts" / "make_d4rl_family.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_d4rl_family", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_family_from_a_tiny_sac_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    argv = ["--env", "Pendulum-v1", "--name", "pend-sac", "--total-steps", "300", "--snapshot-every", "100",
            "--rows", "200", "--eval-episodes", "1", "--work", str(tmp_path / "work"), "--sac-overrides",
            "algo.hidden=[16]", "algo.batch_size=16", "algo.learning_starts=50", "algo.steps_per_iteration=50"]
    mod = _script()
    assert mod.main(argv) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{\"dataset\"")]
    rows = {x["dataset"]: x["rows"] for x in lines}
    assert rows["pend-sac-random"] == rows["pend-sac-medium"] == rows["pend-sac-expert"] == 200
    assert rows["pend-sac-medium-expert"] == 400
    medium = ds.load_dataset("pend-sac-medium")
    step = int(medium.metadata["behavior"].split("step ")[1].split()[0])
    assert step in (100, 200) and rows["pend-sac-medium-replay"] == step  # the buffer up to the medium snapshot
    replay = ds.load_dataset("pend-sac-medium-replay").episodes
    assert bool(replay.data["truncated"][-1]) and replay.num_rows == step
    expert = ds.load_dataset("pend-sac-expert").metadata
    assert expert["env_id"] == "Pendulum-v1" and expert["ref_max_score"] == expert["snapshot_returns"]["300"]
    with h5py.File(ds.dataset_path("pend-sac-expert"), "r") as f:  # a D4RL reader
        assert f["observations"].shape == (200, 3) and f.attrs["env_id"] == "Pendulum-v1"
    # rerun: everything exists, nothing is retrained or rewritten
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()}
    ckpt = (tmp_path / "work" / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert mod.main(argv) == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()}
    assert ckpt == (tmp_path / "work" / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns
    # the data say which code made them (a family is bit-reproducible only by that revision)
    revision = mod.code_revision()
    assert expert["code_revision"] == revision and (tmp_path / "work" / "revision.txt").read_text().strip() == revision


def test_resume_under_another_revision_warns(tmp_path, capsys):
    mod = _script()
    assert mod.check_revision(tmp_path, "abc") == "abc"
    assert mod.check_revision(tmp_path, "abc") == "abc" and capsys.readouterr().err == ""
    assert mod.check_revision(tmp_path, "def") == "abc+def"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "started by revision abc, this is def" in err
    assert (tmp_path / "revision.txt").read_text().strip() == "abc"  # the first revision is kept


def test_code_revision_is_a_commit():
    rev = _script().code_revision()
    assert rev == "unknown" or len(rev.removesuffix("-dirty")) == 40
