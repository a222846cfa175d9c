"""scripts/cppo_reproduce.py builds valid rlx.sweep grids: every method, >= 4 coefficients, one process."""

import importlib.util
from pathlib import Path

from rlx.sweep import plan
from rlx.train import compose_config

_spec = importlib.util.spec_from_file_location("cppo_reproduce", Path(__file__).parents[2] / "scripts" / "cppo_reproduce.py")
front = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(front)


def test_every_method_is_a_valid_one_process_grid(tmp_path):
    assert set(front.METHODS) == {"ppo", "ppo+kl", "ppo+l2", "cppo-heuristic", "cppo-learned"}
    for method, (retention, coefs) in front.METHODS.items():
        sweep_dir, jobs, keys = plan(front.sweep_overrides(method, 3, tmp_path, ["algo.samples_per_task=1024"]), compose_config)
        assert sweep_dir == tmp_path / method / "s3" and keys["launcher.n_jobs"] == "1"
        assert len(jobs) == (1 if retention == "none" else len(coefs)) and (retention == "none" or len(coefs) >= 4)
        for job in jobs:
            assert {"algo.compare_ppo=false", "trainer.threads=1", f"algo.retention={retention}", "seed=3",
                    "algo.samples_per_task=1024"} <= set(job.overrides)


def test_unknown_method_is_one_line(capsys):
    assert front.main(["--methods", "ppo,ewc"]) == 2
    assert "unknown methods ['ewc']" in capsys.readouterr().err
