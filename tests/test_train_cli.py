"""The command line: clear one-line errors, run directories, determinism, resume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.core.errors import ConfigError
from rlx.train import compose_config, main

QUICK = ["algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=32", "trainer.total_steps=256",
         "trainer.eval_episodes=2", "trainer.eval_every=0", "trainer.progress=false", "trainer.tensorboard=false"]


@pytest.mark.parametrize("override,expected", [
    ("algo=ppx", "unknown algo 'ppx' (did you mean 'ppo'?); valid choices:"),
    ("algo.lrr=0.1", "unknown key 'algo.lrr' for algo=ppo (did you mean 'lr'?); valid keys:"),
    ("env=CartPol-v1", "unknown env 'CartPol-v1'"),
    ("trainer.total_step=5", "unknown key 'trainer.total_step' for trainer (did you mean 'total_steps'?)"),
    ("algo.lr=fast", "invalid configuration:"),
    ("sed=1", "unknown key 'sed' (did you mean 'seed'?)"),
])
def test_bad_config_fails_with_one_line(override, expected):
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_error_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "rlx.train", "algo.lr=fast"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "algo.lr" in out.stderr


def test_help_lists_algorithms_and_envs(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "ppo" in text and "cartpole" in text and "env.entry_point" in text


def test_gym_id_as_env_and_typed_config():
    cfg = compose_config(["env=Hopper-v5", "algo=ppo_mujoco", "seed=3"])
    assert cfg.env.id == "Hopper-v5" and cfg.algo.num_steps == 2048 and cfg.algorithm == "ppo_mujoco" and cfg.seed == 3


def _run(tmp_path: Path, *extra) -> Path:
    run_dir = tmp_path / "run"
    assert main([*QUICK, f"trainer.run_dir={run_dir}", *extra]) == 0
    return run_dir


def _metrics(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_run_dir_contents(tmp_path):
    run_dir = _run(tmp_path, "trainer.tensorboard=true")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "eval/return_mean" in summary and summary["step"] == 256
    assert any((run_dir / "tb").iterdir())


def test_default_run_dir_layout(tmp_path):
    assert main([*QUICK, f"trainer.root={tmp_path}", "seed=7"]) == 0
    (run,) = (tmp_path / "ppo" / "CartPole-v1").iterdir()
    assert run.name.endswith("-s7")


def test_same_seed_same_metrics(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert _metrics(a) == _metrics(b)
    c = _run(tmp_path / "c", "seed=1")
    assert _metrics(a) != _metrics(c)


def test_custom_env_by_entry_point_trains(tmp_path):
    run_dir = _run(tmp_path, "env=gym", "env.id=null", "env.name=line",
                   "env.entry_point=tests.envs.custom_envs:LineWorld", "env.kwargs={size: 4}", "env.max_episode_steps=50")
    assert json.loads((run_dir / "summary.json").read_text())["eval/length_mean"] > 0


def test_broken_custom_env_fails_cleanly():
    out = subprocess.run([sys.executable, "-m", "rlx.train", "env=gym", "env.id=null",
                          "env.entry_point=tests.envs.custom_envs:NaNEnv", "trainer.progress=false"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "NaNEnv" in out.stderr and "env checker" in out.stderr


def test_resume_missing_checkpoint_is_clear(tmp_path, capsys):
    assert main([*QUICK, f"trainer.resume={tmp_path}"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_setting_refused_inside_an_algorithm_leaves_no_run_dir(tmp_path, capsys):
    # an offline algorithm without a dataset is refused by its train(), after the run dir was made
    assert main(["algo=iql", "env=CartPole-v1", f"trainer.root={tmp_path}", "trainer.progress=false"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rlx.train: error: algo=iql is offline")
    assert list(tmp_path.iterdir()) == []
