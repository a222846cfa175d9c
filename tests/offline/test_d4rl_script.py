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
