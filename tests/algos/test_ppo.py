"""PPO: the losses, the importable learner, and a learning check on CartPole."""

import gymnasium as gym
import torch

from rlx.algos import PPO, PPOConfig
from rlx.algos.ppo import clipped_surrogate, value_loss
from rlx.core.loops import OnPolicyLoop, TrainerConfig, evaluate_policy, seed_everything
from rlx.envs.registry import make_env, make_vec_env


def test_clipped_surrogate_clips_in_the_right_direction():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))  # ratios
    loss, info = clipped_surrogate(logp, old, adv, clip=0.2)
    # per-sample: A>0,r=1.5 -> -1.2 (clipped); A>0,r=0.5 -> -0.5; A<0,r=1.5 -> 1.5; A<0,r=0.5 -> 0.8 (clipped)
    assert torch.isclose(loss, torch.tensor((-1.2 - 0.5 + 1.5 + 0.8) / 4))
    assert torch.isclose(info["train/clipfrac"], torch.tensor(1.0))
    same, _ = clipped_surrogate(old, old, adv, 0.2)
    assert torch.isclose(same, -adv.mean())


def test_value_loss_clipping():
    v, old, ret = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert torch.isclose(value_loss(v, old, ret, None), torch.tensor(0.5))
    assert torch.isclose(value_loss(v, old, ret, 0.5), torch.tensor(0.5 * 2.5**2))


def test_importable_learner_without_hydra_or_env():
    obs_space = gym.spaces.Box(-1, 1, (3,))
    for act_space in (gym.spaces.Discrete(4), gym.spaces.Box(-1, 1, (2,))):
        learner = PPO(PPOConfig(), obs_space, act_space)
        out = learner.act(torch.zeros(5, 3))
        assert out["action"].shape[0] == 5 and out["logp"].shape == (5,) and out["value"].shape == (5,)
        restored = PPO(PPOConfig(), obs_space, act_space)
        restored.load_state_dict(learner.state_dict())
        torch.testing.assert_close(restored.act(torch.ones(2, 3), deterministic=True)["action"],
                                   learner.act(torch.ones(2, 3), deterministic=True)["action"])


def test_ppo_learns_cartpole():
    seed_everything(0)
    torch.set_num_threads(1)
    envs = make_vec_env("CartPole-v1", num_envs=8)
    cfg = PPOConfig()
    total = 40_000
    learner = PPO(cfg, envs.single_observation_space, envs.single_action_space,
                  total_updates=total // (cfg.num_steps * 8))
    loop = OnPolicyLoop(learner, envs, TrainerConfig(total_steps=total, eval_every=0, progress=False), cfg.num_steps)
    loop.run()
    result = evaluate_policy(lambda o: learner.act(o, deterministic=True)["action"], lambda: make_env("CartPole-v1"),
                             episodes=10, seed=123)
    assert result["eval/return_mean"] >= 250, result  # random play scores ~22
