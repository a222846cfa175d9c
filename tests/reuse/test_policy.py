"""`rlx.policy.Policy.predict` on every observation/action space kind rlx's learners use
(Box -> Discrete, Box -> Box, MultiDiscrete -> Discrete, goal-conditioned), with SB3's shape
conventions, and `rlx.load(run_dir)` on saved runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlx.policy import Policy

BOX3, BOX2 = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,))


def _ppo_discrete():
    from rlx.algos.ppo import PPO, PPOConfig

    return PPO(PPOConfig(), BOX3, gym.spaces.Discrete(4)), BOX3, gym.spaces.Discrete(4)


def _sac_box():
    from rlx.algos.sac import SAC, SACConfig

    return SAC(SACConfig(hidden=[16, 16]), BOX3, BOX2, torch.device("cpu")), BOX3, BOX2


def _check_sb3_shapes(policy: Policy, obs_space, act_space):
    one = obs_space.sample()
    batch = np.stack([obs_space.sample() for _ in range(5)])
    a1, state = policy.predict(one)
    assert state is None
    ab, _ = policy.predict(batch)
    assert isinstance(a1, np.ndarray) and isinstance(ab, np.ndarray)
    assert a1.shape == act_space.shape and ab.shape == (5, *act_space.shape)
    assert ab.dtype == (np.int64 if isinstance(act_space, gym.spaces.Discrete) else act_space.dtype)
    assert all(act_space.contains(a.astype(act_space.dtype)) for a in ab)
    # the same observations as torch, as nested lists, one by one: the same deterministic actions
    np.testing.assert_array_equal(policy.predict(torch.as_tensor(batch))[0], ab)
    np.testing.assert_array_equal(policy.predict(batch.tolist())[0], ab)
    one_by_one = np.stack([policy.predict(o)[0] for o in batch])
    np.testing.assert_allclose(one_by_one, ab, rtol=0, atol=1e-6)  # a batch of 1 rounds like a batch of 5
    return batch, ab


def test_box_observations_discrete_actions():
    learner, obs_space, act_space = _ppo_discrete()
    policy = Policy(learner, obs_space, act_space)
    batch, actions = _check_sb3_shapes(policy, obs_space, act_space)
    assert actions.shape == (5,) and policy.predict(batch[0])[0].shape == ()  # SB3: a 0-d array for Discrete
    expected = learner.act(torch.as_tensor(batch), deterministic=True)["action"].numpy()
    np.testing.assert_array_equal(actions, expected)


def test_box_actions_are_clipped_to_the_bounds():
    learner, obs_space, act_space = _sac_box()
    policy = Policy(learner, obs_space, act_space)
    _check_sb3_shapes(policy, obs_space, act_space)
    wide = Policy(learner, obs_space, gym.spaces.Box(-0.01, 0.01, (2,)))  # tighter bounds than the actor's range
    a, _ = wide.predict(np.ones((64, 3), np.float32) * 0.9)
    assert a.dtype == np.float32 and np.abs(a).max() == pytest.approx(0.01)


def test_sampling_draws_and_leaves_observation_statistics_alone():
    from rlx.algos.ppo import PPO, PPOConfig

    learner = PPO(PPOConfig(normalize_obs=True), BOX3, BOX2)
    mean = learner.obs_rms.mean.clone()
    policy = Policy(learner, BOX3, BOX2)
    obs = np.full((256, 3), 0.5, np.float32)
    torch.manual_seed(0)
    a, b = policy.predict(obs, deterministic=False)[0], policy.predict(obs, deterministic=False)[0]
    assert not np.array_equal(a, b) and np.abs(a).max() <= 2.0
    assert np.array_equal(policy.predict(obs)[0], policy.predict(obs)[0])
    assert torch.equal(learner.obs_rms.mean, mean)


def test_multidiscrete_observations():
    from rlx.envs.gridworld import TabularQ, TabularQConfig

    obs_space, act_space = gym.spaces.MultiDiscrete([4, 4]), gym.spaces.Discrete(4)
    learner = TabularQ(TabularQConfig(), obs_space, act_space)
    learner.q[:, 2] = 1.0
    learner.seen[:] = True
    policy = Policy(learner, obs_space, act_space)
    _check_sb3_shapes(policy, obs_space, act_space)
    assert policy.predict(np.array([1, 3]))[0] == 2


def test_goal_conditioned_policy_takes_the_goal_by_keyword_or_dict():
    from rlx.algos.gcrl import GCIQLConfig, GoalConditioned

    learner = GoalConditioned(GCIQLConfig(hidden=[16, 16]), BOX3, BOX2, total_steps=10)
    policy = Policy(learner, BOX3, BOX2)
    obs, goal = np.random.rand(6, 3).astype(np.float32), np.random.rand(6, 3).astype(np.float32)
    a, _ = policy.predict(obs, goal=goal)
    expected = learner.act(torch.as_tensor(obs), True, goal=torch.as_tensor(goal))["action"].clamp(-2, 2).numpy()
    np.testing.assert_allclose(a, expected)
    np.testing.assert_array_equal(policy.predict({"observation": obs, "desired_goal": goal})[0], a)
    np.testing.assert_array_equal(policy.predict(obs[0], goal=goal[0])[0], a[0])
    with pytest.raises(ValueError, match="goal batch"):
        policy.predict(obs, goal=goal[0])
    with pytest.raises(ValueError, match="'desired_goal'"):
        policy.predict({"observation": obs})


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 4)), np.zeros((2, 3, 1))])
def test_wrong_observation_shape_is_one_line_naming_both_shapes(bad):
    learner, obs_space, act_space = _ppo_discrete()
    with pytest.raises(ValueError) as e:
        Policy(learner, obs_space, act_space).predict(bad)
    msg = str(e.value)
    assert "\n" not in msg and f"has shape {bad.shape}" in msg and "expected (3,) (one) or (n, 3) (a batch)" in msg


# ---------------------------------------------------------------------------- rlx.load(run_dir)

def _train(tmp_path, *args: str):
    from rlx.train import main

    run = tmp_path / "run"
    assert main([*args, "trainer.progress=false", "trainer.tensorboard=false", f"trainer.run_dir={run}"]) == 0
    return run


def test_rlx_load_a_ppo_run_predicts_like_the_trained_learner(tmp_path):
    import rlx
    from rlx.runs import load_learner

    run = _train(tmp_path, "algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16",
                 "trainer.total_steps=64", "trainer.eval_episodes=1", "trainer.eval_every=0")
    policy = rlx.load(run)
    assert isinstance(policy, Policy) and policy.action_space == gym.spaces.Discrete(2)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)
    assert action.shape == () and env.action_space.contains(int(action))
    learner, _, _ = load_learner(run)  # the same weights as the checkpoint holds
    batch = np.stack([env.observation_space.sample() for _ in range(32)])
    np.testing.assert_array_equal(policy.predict(batch)[0],
                                  learner.act(torch.as_tensor(batch), deterministic=True)["action"].numpy())


def test_rlx_load_without_the_rebuild_record_uses_config_yaml(tmp_path):
    """Checkpoints written before the loops recorded `init` still load (from config.yaml)."""
    import rlx
    from rlx.core.checkpoint import load_checkpoint, save_checkpoint

    run = _train(tmp_path, "algo=ppo", "env=CartPole-v1", "env.num_envs=2", "algo.num_steps=16",
                 "trainer.total_steps=32", "trainer.eval_episodes=1", "trainer.eval_every=0")
    path = run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    assert state["init"]["__rlx_object__"] == "rlx.algos.ppo:PPO"
    new = rlx.load(run).predict(np.zeros((4, 4), np.float32))[0]
    save_checkpoint(path, {k: v for k, v in state.items() if k != "init"})
    np.testing.assert_array_equal(rlx.load(run).predict(np.zeros((4, 4), np.float32))[0], new)


def test_rlx_load_a_gflownet_run_gives_the_sampler(tmp_path):
    import rlx
    from rlx.algos.gflownet import GFlowNet

    run = _train(tmp_path, "algo=gflownet", "env=hypergrid", "env.kwargs.ndim=2", "env.kwargs.height=4",
                 "algo.hidden=16", "trainer.total_steps=64", "trainer.eval_every=0", "algo.eval_samples=64")
    learner = rlx.load(run)
    assert isinstance(learner, GFlowNet) and learner.env.height == 4
    objects = learner.sample_objects(5)
    assert objects["pos"].shape == (5, 2)


def test_rlx_load_names_a_directory_that_is_not_a_run(tmp_path):
    import rlx
    from rlx.core.errors import DatasetError

    with pytest.raises(DatasetError, match="is not an rlx run directory"):
        rlx.load(tmp_path)


def test_import_rlx_stays_light():
    import subprocess
    import sys

    code = "import sys, rlx; assert callable(rlx.__getattr__); print(sorted(m for m in ('torch', 'rlx.runs') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rlx_load_a_learner_file(tmp_path):
    import rlx
    from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
    from rlx.envs.hypergrid import HyperGrid

    learner, obs_space, act_space = _sac_box()
    policy = rlx.load(learner.save(tmp_path / "sac.pt"))
    assert isinstance(policy, Policy) and policy.action_space == act_space and policy.observation_space == obs_space
    obs = np.random.rand(8, 3).astype(np.float32)
    np.testing.assert_array_equal(policy.predict(obs)[0], Policy(learner).predict(obs)[0])
    env = HyperGrid(ndim=2, height=3)
    gfn = GFlowNet(GFlowNetConfig(hidden=8), env, MLPPolicy(env, hidden=8))
    assert isinstance(rlx.load(gfn.save(tmp_path / "gfn.pt")), GFlowNet)
    with pytest.raises(TypeError, match="was not built from gymnasium spaces"):
        Policy(gfn)
