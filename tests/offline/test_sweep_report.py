import json

import numpy as np
import pytest

from rlx import report, sweep
from rlx.train import compose_config, run


def test_expand_is_the_cartesian_grid():
    grid = sweep.expand(["algo=iql", "reward=original,zero", "seed=0,1,2"])
    assert len(grid) == 6 and ["algo=iql", "reward=zero", "seed=2"] in grid


def test_sweep_runs_skips_finished_and_records_failures(data_dir, tmp_path):
    common = ["algo=bc", "env=pendulum-tiny", "trainer.total_steps=5", "trainer.eval_episodes=1",
              "trainer.tensorboard=false", f"hydra.sweep.dir={tmp_path / 'sw'}", "launcher=inprocess"]
    status = sweep.run_sweep([*common, "seed=0,1"], compose_config, run, log=lambda s: None)
    assert len(status["done"]) == 2 and not status["failed"]
    status = sweep.run_sweep([*common, "seed=0,1,2"], compose_config, run, log=lambda s: None)
    assert len(status["skipped"]) == 2 and len(status["done"]) == 1
    status = sweep.run_sweep([*common, "seed=0", "env.dataset=missing,pendulum-tiny"], compose_config, run,
                             log=lambda s: None)
    assert len(status["failed"]) == 1 and len(status["skipped"]) == 1
    failed = status["failed"][0]
    assert "python -m rlx.envs.datasets" in open(f"{failed}/error.txt").read()
    records = [json.loads(line) for line in open(tmp_path / "sw" / "sweep.jsonl")]
    assert {r["status"] for r in records} == {"failed", "skipped"}


def test_run_points_returns_summaries_in_order_and_skips_finished(data_dir, tmp_path):
    common = ["algo=bc", "env=pendulum-tiny", "trainer.total_steps=5", "trainer.eval_episodes=1",
              "trainer.tensorboard=false"]
    points = [[*common, "seed=1"], [*common, "seed=0"], [*common, "seed=1"], [*common, "seed=0", "env.dataset=missing"]]
    lines = []
    out = sweep.run_points(points, tmp_path / "sw", compose_config, run, launcher="inprocess", log=lines.append)
    assert [job.overrides[-1] for job, _ in out] == ["seed=1", "seed=0", "seed=1", "env.dataset=missing"]
    assert out[0][0].run_dir == out[2][0].run_dir != out[1][0].run_dir  # the same config is one run
    assert "3 to run" in lines[0]  # the repeated point ran once
    assert [j.run_dir for j in sweep.plan_points(points, tmp_path / "sw", compose_config)] == [j.run_dir for j, _ in out]
    for job, summary in out[:3]:
        assert summary == json.loads((tmp_path / "sw" / job.key / "summary.json").read_text())
    assert isinstance(out[3][1], Exception) and "missing" in str(out[3][1])
    again = sweep.run_points(points[:2], tmp_path / "sw", compose_config, run, launcher="inprocess",
                             log=lines.append)
    assert "2 finished before, 0 to run" in lines[-2] and [s for _, s in again] == [out[0][1], out[1][1]]
    with pytest.raises(ValueError, match="unknown launcher"):
        sweep.run_points(points[:1], tmp_path / "sw", compose_config, run, launcher="threads")


def test_bad_sweep_config_fails_before_running(tmp_path, capsys):
    assert sweep.main(["algo=iql", "algo.expectil=0.7,0.9", f"hydra.sweep.dir={tmp_path}"], compose_config, run) == 2
    assert "expectile" in capsys.readouterr().err


def test_iqm_and_stratified_bootstrap():
    assert report.iqm(np.array([0.0, 1, 2, 3, 4, 5, 6, 100])) == pytest.approx(3.5)  # drops 2 at each end
    assert report.iqm(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # n=3: plain mean, like scipy.trim_mean
    lo, hi = report.bootstrap_ci([np.array([1.0, 1.0, 1.0])])
    assert lo == hi == 1.0
    rng = np.random.default_rng(0)
    strata = [rng.normal(0, 1, 10), rng.normal(50, 1, 10)]
    lo, hi = report.bootstrap_ci(strata)
    # every resample keeps 10 scores of each stratum: the CI sits tightly around the pooled IQM
    assert lo < report.iqm(np.concatenate(strata)) < hi and hi - lo < 10


def _fake_run(root, algo, env, reward, seed, score, dataset=None):
    d = root / f"{algo}-{env}-{dataset}-{reward}-{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"algorithm: {algo}\nalgo: {{value: iql, extraction: awr, test_time: none}}\n"
                                   f"env: {{name: {env}, dataset: {dataset or env}}}\nreward: {{mode: {reward}, scale: 1.0, shift: 0.0}}\nseed: {seed}\n")
    (d / "summary.json").write_text(json.dumps({"eval/normalized_score": score}))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "eval/normalized_score": score * s / 2}) + "\n"
                                             for s in (1, 2)))


def test_report_table_and_plots(tmp_path, capsys):
    for env, base in (("hopper-medium", 50.0), ("walker2d-medium", 70.0)):
        for reward, shift in (("original", 0.0), ("zero", -20.0)):
            for seed in range(3):
                _fake_run(tmp_path, "iql", env, reward, seed, base + shift + seed)
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "iql[iql,awr]" in out and "hopper-medium" in out and "51.0 [" in out  # IQM of 50, 51, 52
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000 and (tmp_path / "bars.png").is_file()
    agg = json.loads((tmp_path / "report.json").read_text())
    groups = {g["reward"]: g for g in agg["groups"]}
    assert groups["original"]["n"] == 6 and groups["zero"]["iqm"] < groups["original"]["iqm"]
    assert report.main([str(tmp_path / "empty")]) == 2


def test_report_keeps_overridden_datasets_apart(tmp_path, capsys):
    for seed in range(3):
        _fake_run(tmp_path, "bc", "hopper-medium", "original", seed, 40.0 + seed)
        _fake_run(tmp_path, "bc", "hopper-medium", "original", seed, 10.0 + seed, dataset="/data/hopper-s-medium.hdf5")
    assert report.main([str(tmp_path)]) == 0
    cells = {c["env"]: c for c in json.loads((tmp_path / "report.json").read_text())["cells"]}
    assert set(cells) == {"hopper-medium", "hopper-medium[hopper-s-medium]"}
    assert cells["hopper-medium"]["n"] == 3 and cells["hopper-medium[hopper-s-medium]"]["iqm"] == 11.0


def test_interrupted_sweep_run_resumes_from_its_checkpoint(data_dir, tmp_path):
    args = ["algo=bc", "env=pendulum-tiny", "trainer.total_steps=10", "trainer.checkpoint_every=5", "trainer.eval_episodes=1",
            "trainer.eval_every=0", "trainer.tensorboard=false", f"hydra.sweep.dir={tmp_path / 'sw'}", "launcher=inprocess"]
    (run_dir,) = sweep.run_sweep(args, compose_config, run, log=lambda s: None)["done"]
    (tmp_path / "sw" / run_dir.split("/")[-1] / "summary.json").unlink()  # as if killed before the end
    status = sweep.run_sweep(args, compose_config, run, log=lambda s: None)
    assert status["done"] == [run_dir]
    steps = [json.loads(line)["step"] for line in open(f"{run_dir}/metrics.jsonl")]
    assert steps == sorted(steps) and steps.count(0) == 1  # continued, not restarted from step 0 and appended


def _fake_cppo_run(root, retention, coef, seed, plasticity, forgetting):
    d = root / f"{retention}-{coef}-{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"algo: {{name: cppo, retention: {retention}, retention_coef: {coef}, weighting: paper, "
                                   f"anchor: prev_task}}\nenv: {{name: text_stream}}\nreward: {{mode: original}}\nseed: {seed}\n")
    (d / "summary.json").write_text(json.dumps({"final/plasticity": plasticity, "final/forgetting": forgetting,
                                                "final/avg_reward": plasticity - forgetting}))


def test_report_xy_front_per_method_and_coefficient(tmp_path, capsys):
    for seed, (p, f) in enumerate([(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]):
        _fake_cppo_run(tmp_path, "heuristic", 0.1, seed, p, f)
        _fake_cppo_run(tmp_path, "heuristic", 0.3, seed, p / 2, f / 4)
        _fake_cppo_run(tmp_path, "none", 0.1, seed, p + 1, f + 1)
    assert report.main([str(tmp_path), "--metric", "final/avg_reward", "--xy", "final/plasticity", "final/forgetting"]) == 0
    out = capsys.readouterr().out
    rows = {r["algo"]: r for r in json.loads((tmp_path / "report.json").read_text())["xy"]}
    assert set(rows) == {"cppo[heuristic]@0.1", "cppo[heuristic]@0.3", "cppo[none]"}  # no coefficient for PPO
    r = rows["cppo[heuristic]@0.1"]
    # plasticity 1, 2, 3: mean 2, Student-t half-width t(0.975, 2) * 1 / sqrt(3) = 2.484; forgetting constant
    assert r["n"] == 3 and r["x"] == pytest.approx(2.0) and r["x_ci"] == pytest.approx(2.484, abs=1e-3)
    assert r["y"] == pytest.approx(2.0) and r["y_ci"] == pytest.approx(0.0)
    assert "2.000 +/- 2.484" in out
    assert (tmp_path / "xy.png").stat().st_size > 1000
    assert report.main([str(tmp_path), "--metric", "final/avg_reward", "--xy", "final/plasticity", "final/missing"]) == 2
    assert "no run has both" in capsys.readouterr().err
