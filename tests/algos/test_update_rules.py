"""PPO's update loop and helpers on small hand-checked cases: minibatch count and size, the
metrics as minibatch means, the target-KL early stop, learning-rate annealing, observation
normalization, and the explained variance."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlx.algos import PPO, PPOConfig
from rlx.algos.ppo import clipped_surrogate, explained_variance

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def rollout(learner, T=6, N=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(T * N, 3, generator=gen)
    out = learner.act(obs)
    flat = TensorDict({"obs": out["obs"], "action": out["action"], "logp": out["logp"], "value": out["value"],
                       "adv": torch.randn(T * N, generator=gen), "ret": out["value"] + torch.randn(T * N, generator=gen)},
                      batch_size=[T * N])
    return flat.reshape(T, N)


def test_explained_variance_hand_computed():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])  # var 5/3
    assert explained_variance(t, t) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), t) == pytest.approx(0.0)  # a constant prediction explains nothing
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0, 5.0]), t) == pytest.approx(1 - 0.25 / (5 / 3))
    assert explained_variance(torch.tensor([4.0, 3.0, 2.0, 1.0]), t) == pytest.approx(1 - 20 / 3 / (5 / 3))
    assert math.isnan(explained_variance(t, torch.ones(4)))


def test_approx_kl_is_the_k3_estimator():
    logp, old = torch.tensor([0.0, -0.1]), torch.tensor([-0.3, 0.0])
    _, info = clipped_surrogate(logp, old, torch.ones(2), 0.2)
    lr = logp - old
    assert float(info["train/approx_kl"]) == pytest.approx(float(((lr.exp() - 1) - lr).mean()))
    assert float(info["train/clipfrac"]) == pytest.approx(0.5)  # |e^0.3 - 1| = 0.35 > 0.2, |e^-0.1 - 1| = 0.095


def test_update_runs_every_minibatch_of_every_epoch_and_averages_the_metrics():
    torch.manual_seed(0)
    cfg = PPOConfig(hidden=[8], num_minibatches=3, update_epochs=2, anneal_lr=False, lr=0.01)
    learner = PPO(cfg, OBS, gym.spaces.Discrete(3))
    batch = rollout(learner)
    sizes, policy = [], []
    real = learner.loss

    def loss(mb):
        out = real(mb)
        sizes.append(mb.shape[0])
        policy.append(float(out[1]["loss/policy"]))
        return out

    learner.loss = loss
    metrics = learner.update(batch)
    assert sizes == [4] * 6  # 12 rows / 3 minibatches, 2 epochs
    assert metrics["loss/policy"] == pytest.approx(sum(policy) / 6)
    assert metrics["train/lr"] == pytest.approx(0.01)
    flat = batch.reshape(-1)
    assert metrics["train/explained_variance"] == pytest.approx(explained_variance(flat["value"], flat["ret"]))


def test_target_kl_stops_after_the_epoch_that_exceeds_it():
    torch.manual_seed(0)
    counts = {}
    for target_kl in (None, 1e-9, 1e6):
        cfg = PPOConfig(hidden=[8], num_minibatches=2, update_epochs=4, anneal_lr=False, lr=0.05, target_kl=target_kl)
        learner = PPO(cfg, OBS, gym.spaces.Discrete(3))
        n = []
        real = learner.loss
        learner.loss = lambda mb: (n.append(1), real(mb))[1]
        learner.update(rollout(learner))
        counts[target_kl] = len(n)
    assert counts == {None: 8, 1e-9: 2, 1e6: 8}  # a tiny target stops after the first epoch's 2 minibatches


def test_learning_rate_anneals_linearly_per_update():
    cfg = PPOConfig(hidden=[8], lr=0.01, anneal_lr=True, update_epochs=1)
    learner = PPO(cfg, OBS, gym.spaces.Discrete(2), total_updates=4)
    lrs = [learner.update(rollout(learner))["train/lr"] for _ in range(3)]
    assert lrs == pytest.approx([0.01, 0.0075, 0.005])  # reported before each update's decay step
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_observation_normalization_updates_only_when_collecting():
    learner = PPO(PPOConfig(hidden=[8], normalize_obs=True), OBS, gym.spaces.Discrete(2))
    obs = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, -3.0]])
    x = learner.preprocess(obs)  # no statistics yet: mean 0, var 1
    torch.testing.assert_close(x, obs)
    learner.preprocess(obs, update_stats=True)
    x = learner.preprocess(obs)
    mean, std = torch.tensor([2.0, 4.0, 0.0]), torch.tensor([1.0, 2.0, 3.0])  # population std of the two rows
    torch.testing.assert_close(x, (obs - mean) / std, atol=1e-4, rtol=1e-4)
    out = learner.act(obs, deterministic=True)  # evaluation does not move the statistics
    torch.testing.assert_close(out["obs"], x)
    big = learner.preprocess(torch.tensor([[1e6, 0.0, 0.0]]))
    assert float(big[0, 0]) == pytest.approx(10.0)  # clipped to +-10
    plain = PPO(PPOConfig(hidden=[8]), OBS, gym.spaces.Discrete(2))
    torch.testing.assert_close(plain.preprocess(obs.double()), obs)  # float32, flattened, not normalized
