"""Resume is checked before it writes; one writer per run directory; logs agree after resume
(metrics.jsonl and TensorBoard hold the same strictly increasing steps; torn lines dropped)."""

import json
import shutil

import pytest

from rlx.core.logging import lock_run_dir, read_metrics
from rlx.report import main as report_main
from rlx.train import main

TRAINER = ["trainer.eval_every=0", "trainer.eval_episodes=1", "trainer.checkpoint_every=2", "trainer.progress=false"]
PPO = ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16", "algo.hidden=[16]", *TRAINER]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A PPO run of 96 env steps (checkpoints at 64 and 96), with TensorBoard."""
    run_dir = tmp_path_factory.mktemp("runs") / "ppo"
    assert main([*PPO, "trainer.total_steps=96", f"trainer.run_dir={run_dir}"]) == 0
    return run_dir


def _files(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change,message", [
    (["algo=iql", "env=pendulum-tiny", *TRAINER], "algo=ppo, this command has algo=iql"),
    ([*PPO, "env=Acrobot-v1"], "env.id=CartPole-v1, this command has env.id=Acrobot-v1"),
    ([*PPO, "algo.hidden=[8]"], "the checkpoint does not fit the networks of this configuration"),
    ([*PPO, "trainer.total_steps=0"], "trainer.total_steps=0 is out of range"),
])
def test_refused_resume_leaves_the_run_byte_identical(finished_run, tmp_path, capsys, change, message, monkeypatch):
    monkeypatch.setenv("RLX_DATA", str(tmp_path))
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    before, entries = _files(run_dir), sorted(run_dir.rglob("*"))
    code = main(["trainer.total_steps=160", *change, f"trainer.resume={run_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and err[-1].startswith("rlx.train: error:"), err
    assert _files(run_dir) == before and sorted(run_dir.rglob("*")) == entries


def test_second_writer_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = lock_run_dir(run_dir)  # another writer holds the directory
    try:
        code = main([*PPO, "trainer.total_steps=32", f"trainer.run_dir={run_dir}"])
    finally:
        import os

        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is being written by another process" in err[0]
    assert list(run_dir.iterdir()) == []


def _tb_steps(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_keeps_tensorboard_and_metrics_in_step(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 128, "loss/val')  # a torn last line (killed mid-write)
    assert report_main([str(run_dir), "--no-plots"]) == 0  # rlx.report skips it
    assert main([*PPO, "trainer.total_steps=160", f"trainer.resume={run_dir}"]) == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows if "loss/value" in r]
    assert steps == [32, 64, 96, 128, 160]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)  # the torn line is gone
    assert _tb_steps(run_dir, "loss/value") == steps


def test_restart_into_a_directory_without_checkpoint_drops_old_metrics(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 32, "loss/value": 9.0}) + "\n")
    assert main([*PPO, "trainer.total_steps=64", "trainer.tensorboard=false", f"trainer.run_dir={run_dir}"]) == 0
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss/value" in r]
    assert steps == [32, 64] and all(r.get("loss/value") != 9.0 for r in read_metrics(run_dir / "metrics.jsonl"))
