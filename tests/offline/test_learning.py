import gymnasium as gym
import pytest
import torch

from rlx.algos.offline_ac import IQLConfig, OfflineActorCritic
from rlx.algos.adapt import evaluate_offline
from rlx.core.buffers import ReplayBuffer
from rlx.core.loops import OfflineLoop, TrainerConfig


def _train(cfg, data, steps):
    env = gym.make("Pendulum-v1")
    learner = OfflineActorCritic(cfg, env.observation_space, env.action_space, steps)
    learner.set_dataset_stats(data.episodes.data["obs"])
    loop = OfflineLoop(learner, ReplayBuffer.from_episodes(data.episodes),
                       TrainerConfig(total_steps=steps, eval_every=0, progress=False), cfg.batch_size, seed=0)
    loop.run()
    return learner


def test_tiny_offline_iql_beats_random_clearly(tiny_data):
    torch.manual_seed(0)
    cfg = IQLConfig(hidden=[64, 64], batch_size=128, actor_lr=1e-3, critic_lr=1e-3)
    learner = _train(cfg, tiny_data, 800)
    ret = evaluate_offline(learner, lambda: gym.make("Pendulum-v1"), episodes=4, seed=123)["eval/return_mean"]
    score = tiny_data.normalized_score(ret)
    assert score > 40, f"IQL on pendulum-tiny scored {score:.1f} (return {ret:.0f}); random is 0, the controller 100"
    # test-time options on the same checkpoint keep a policy that still swings the pendulum up (small steps
    # from the offline policy: OPEX beta 0.1, TTT lr 1e-4 anchored to it), far above random (0)
    for mode in ("opex", "ttt"):
        out = evaluate_offline(learner, lambda: gym.make("Pendulum-v1"), episodes=2, seed=123, mode=mode)
        adapted = tiny_data.normalized_score(out["eval/return_mean"])
        assert adapted > 60, f"{mode} scored {adapted:.1f} on the checkpoint that scored {score:.1f} without it"


def test_learner_state_round_trip_and_td3bc_update(tiny_data):
    from rlx.algos.registry import preset_config

    env = gym.make("Pendulum-v1")
    for cfg in (IQLConfig(hidden=[16]), preset_config("td3bc", hidden=[16])):
        a = OfflineActorCritic(cfg, env.observation_space, env.action_space, 10)
        batch = ReplayBuffer.from_episodes(tiny_data.episodes).sample(32, torch.Generator().manual_seed(0))
        for _ in range(4):
            metrics = a.update(batch)
        assert "loss/q" in metrics and "loss/actor" in metrics
        b = OfflineActorCritic(cfg, env.observation_space, env.action_space, 10)
        b.load_state_dict(a.state_dict())
        obs = batch["obs"][:5]
        assert torch.equal(a.act(obs, True)["action"], b.act(obs, True)["action"])


def test_bad_config_is_one_clear_error():
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="algo.extraction"):
        OfflineActorCritic(IQLConfig(extraction="awac"), env.observation_space, env.action_space)
    with pytest.raises(ValueError, match="needs a critic"):
        OfflineActorCritic(IQLConfig(value="none"), env.observation_space, env.action_space)


def test_cli_run_with_reward_transform(data_dir, tmp_path, capsys):
    from rlx.train import main

    rc = main(["algo=bc", "env=pendulum-tiny", "reward=negative", "trainer.total_steps=20", "trainer.eval_episodes=1",
               f"trainer.run_dir={tmp_path / 'run'}", "trainer.progress=false", "trainer.tensorboard=false"])
    out = capsys.readouterr().out
    assert rc == 0 and "eval/normalized_score=" in out and "eval/normalized_score_local=" in out
    rc = main(["algo=iql", "env=pendulum-tiny", "env.dataset=nope", f"trainer.run_dir={tmp_path / 'r2'}"])
    assert rc == 2 and "python -m rlx.envs.datasets" in capsys.readouterr().err
    assert main(["algo=iql", "env=hopper", f"trainer.run_dir={tmp_path / 'r3'}"]) == 2
    assert "is offline" in capsys.readouterr().err
    assert main(["algo=bc", "env=pendulum-tiny", "env.id=MountainCarContinuous-v0", f"trainer.run_dir={tmp_path / 'r4'}"]) == 2
    assert "collected in Pendulum-v1" in capsys.readouterr().err
