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


def test_pick_expert_rules():
    mod = _script()
    scores = {100: 5.0, 200: 9.0, 300: 2.0, 400: 9.0}
    assert mod.pick_expert(scores, "final") == (400, 9.0)
    assert mod.pick_expert({100: 5.0, 200: 9.0, 300: 2.0}, "best") == (200, 9.0)
    assert mod.pick_expert(scores, "best") == (400, 9.0)  # a tie: the later snapshot
    import pytest

    with pytest.raises(ValueError, match="use final or best"):
        mod.pick_expert(scores, "median")


def test_best_expert_and_an_extended_run(tmp_path, monkeypatch, capsys):
    """--expert best picks the top-scoring snapshot, re-scores it on fresh episodes, and takes medium
    from the snapshots before it; a larger --total-steps extends the run and scores only the new
    snapshots."""
    monkeypatch.setenv("RLX_DATA", str(tmp_path / "data"))
    mod = _script()
    base = ["--env", "Pendulum-v1", "--name", "pb", "--snapshot-every", "100", "--rows", "100",
            "--eval-episodes", "1", "--work", str(tmp_path / "work"), "--expert", "best", "--sac-overrides",
            "algo.hidden=[16]", "algo.batch_size=16", "algo.learning_starts=50", "algo.steps_per_iteration=50"]
    assert mod.main([*base, "--total-steps", "200"]) == 0
    scores_file = tmp_path / "work" / "snapshot_returns.json"
    first = json.loads(scores_file.read_text())
    assert sorted(first) == ["100", "200"]
    for p in (tmp_path / "data").iterdir():
        p.unlink()
    calls = []
    real = mod.ds.reference_return
    monkeypatch.setattr(mod.ds, "reference_return", lambda *a, **k: calls.append(k.get("seed")) or real(*a, **k))
    assert mod.main([*base, "--total-steps", "300"]) == 0
    scores = json.loads(scores_file.read_text())
    assert sorted(scores) == ["100", "200", "300"] and all(scores[k] == first[k] for k in first)
    # one new snapshot scored, the best one re-scored on other seeds, the random policy
    assert calls == [None, mod.RESCORE_SEED, None]
    meta = ds.load_dataset("pb-expert").metadata
    step, _ = mod.pick_expert({int(k): v for k, v in scores.items()}, "best")
    assert meta["expert_rule"] == "best" and meta["expert_step"] == step
    assert f"step {step} " in meta["behavior"]
    medium = ds.load_dataset("pb-medium").metadata["behavior"]
    assert step == 100 or int(medium.split("step ")[1].split()[0]) < step
