"""`python -m rlx.train algo=sac|td3`: a tiny run end to end, resume, and bad settings."""

import json

from rlx.train import main

ARGS = ["env=Pendulum-v1", "env.num_envs=2", "trainer.total_steps=200", "trainer.eval_episodes=1", "trainer.progress=false",
        "trainer.tensorboard=false", "algo.hidden=[16]", "algo.batch_size=16", "algo.learning_starts=100",
        "algo.steps_per_iteration=50"]


def test_sac_and_td3_run_from_the_command_line_and_resume(tmp_path, capsys):
    for algo in ("sac", "td3"):
        run = tmp_path / algo
        assert main([f"algo={algo}", *ARGS, f"trainer.run_dir={run}"]) == 0
        assert "eval/return_mean=" in capsys.readouterr().out
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in lines if "train/updates" in m] == [50, 100, 150, 200]
        assert lines[-2]["train/updates"] == 50.0 and "loss/q" in lines[-2]  # 2 envs x 25 steps, utd 1
        assert main([f"algo={algo}", *ARGS, f"trainer.resume={run}"]) == 0  # finished: a no-op
        assert "already finished" in capsys.readouterr().err


def test_discrete_actions_are_one_clear_error(tmp_path, capsys):
    assert main(["algo=sac", "env=CartPole-v1", f"trainer.run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "continuous (Box) action space" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
