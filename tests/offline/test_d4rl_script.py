"""scripts/offline_d4rl.py builds valid rlx.sweep points: the value x extraction matrix on three
datasets, the four reward ablations of IQL, each point a distinct run labelled by its dataset."""

import importlib.util
from pathlib import Path

import pytest

from rlx.sweep import plan_points
from rlx.train import compose_config

_spec = importlib.util.spec_from_file_location("offline_d4rl", Path(__file__).parents[2] / "scripts" / "offline_d4rl.py")
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def test_points_cover_the_matrix_and_the_survival_table(tmp_path):
    pts = script.points([("hopper-sac", "hopper")], 2, list(script.PARTS), ["trainer.total_steps=10"])
    jobs = plan_points(pts, tmp_path, compose_config)
    runs = {job.run_dir for job in jobs}
    # 4 algos x 3 datasets + 4 rewards x 3 datasets, IQL/original on medium and medium-replay shared
    assert len(pts) == 24 and len(runs) == 22
    cells = {(o["algo"], o["env.dataset"], o["reward"]) for o in (dict(x.split("=", 1) for x in p) for p in pts)}
    for algo in ("bc", "iql", "iql_ddpgbc", "td3bc"):
        for kind in ("medium", "medium-replay", "medium-expert"):
            assert (algo, f"hopper-sac-{kind}", "original") in cells
    for reward in ("original", "zero", "random", "negative"):
        for kind in ("medium", "medium-replay", "expert"):
            assert ("iql", f"hopper-sac-{kind}", reward) in cells
    cfg = compose_config(pts[0])
    assert cfg.seed == 2 and cfg.env.name == cfg.env.dataset and cfg.env.id == "Hopper-v5"


def test_bad_family_and_part_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--family", "hopper-sac"])
    assert e.value.code == 2 and "<dataset prefix>:<env preset>" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        script.main(["--family", "a:hopper", "--parts", "matrix,ablation"])
    assert e.value.code == 2 and "unknown parts ['ablation']" in capsys.readouterr().err


def test_test_time_summary_pairs_each_mode_with_none_on_the_same_runs():
    spec = importlib.util.spec_from_file_location("offline_test_time", Path(__file__).parents[2] / "scripts" / "offline_test_time.py")
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    table = {("d", "iql+awr", "none"): [10.0, 20.0, 30.0], ("d", "iql+awr", "opex"): [12.0, 19.0, 35.0]}
    lines = {x["mode"]: x for x in tt.summarize(table)}
    assert lines["none"]["mean_normalized_score"] == 20.0 and "gain_over_none" not in lines["none"]
    opex = lines["opex"]
    # gains 2, -1, 5: mean 2, sd 3, t(0.975, 2) = 4.303 -> half width 4.303 * 3 / sqrt(3) = 7.45
    assert opex["gain_over_none"] == 2.0 and opex["runs_improved"] == 2
    assert opex["gain_ci95_half_width"] == pytest.approx(7.45, abs=0.01)
    assert opex["mean_normalized_score"] == pytest.approx(22.0)


def test_sac_curves_window_means_and_d4rl_share(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("sac_curves", Path(__file__).parents[2] / "scripts" / "sac_curves.py")
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("env:\n  id: Hopper-v5\n")
    rows = [{"step": 1000, "train/episode_return": 10.0}, {"step": 2000, "train/episode_return": 30.0},
            {"step": 2000, "loss/q": 1.0}, {"step": 3000, "train/episode_return": 100.0}]
    (run / "metrics.jsonl").write_text("\n".join(map(__import__("json").dumps, rows)))
    (tmp_path / "snapshot_returns.json").write_text('{"2000": 50.0, "4000": 1617.15}')
    env, train, snaps = sc.curve(tmp_path, 2000)
    assert env == "Hopper-v5" and train == {2000: 20.0, 4000: 100.0} and snaps == {2000: 50.0, 4000: 1617.15}
    assert sc.main([str(tmp_path), "--window", "2000"]) == 0
    out = capsys.readouterr().out
    # 1617.15 / 3234.3 = 50.0% of the expert reference; (1617.15 + 20.27) / (3234.3 + 20.27) = 50.3 normalized
    assert "= 50.0% of D4RL's expert reference 3234.3; D4RL-normalized 50.3" in out and "CleanRL SAC Hopper-v4" in out


def test_tables_pivot_report_cells_next_to_the_papers_numbers():
    cells = [{"algo": "iql[iql,awr]", "env": "hopper-sac-medium-replay", "reward": "original", "n": 3, "iqm": 40.0, "ci": [30.0, 50.0]},
             {"algo": "bc", "env": "hopper-sac-medium-replay", "reward": "original", "n": 3, "iqm": 12.5, "ci": [10.0, 15.0]},
             {"algo": "iql[iql,awr]", "env": "hopper-sac-expert", "reward": "negative", "n": 2, "iqm": 90.0, "ci": [88.0, 92.0]}]
    text = script.tables(cells, [("hopper-sac", "hopper")], list(script.PARTS))
    lines = text.splitlines()

    def split(line):
        return [x.strip() for x in line.strip("|").split("|")]

    row = {split(line)[0]: split(line) for line in lines if line.startswith("| ")}
    col = split(lines[0]).index("hopper-sac-medium-replay")
    assert row["iql+awr"][col] == "40.0 [30.0, 50.0] (n=3)" and row["bc"][col] == "12.5 [10.0, 15.0] (n=3)"
    assert row["td3+bc"][col] == "-"  # a missing cell is a dash, not a zero
    assert row["iql+awr, D4RL (IQL paper)"][col] == "94.7" and row["bc, D4RL (IQL paper)"][col] == "18.1"
    survival = split(lines[lines.index("") + 1])
    assert row["negative"][survival.index("hopper-sac-expert")] == "90.0 [88.0, 92.0] (n=2)"
