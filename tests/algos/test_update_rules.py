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
from rlx.algos.ppo import clipped_surrogate, explained_variance, value_loss

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
        sizes.append(len(mb["obs"]))
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
        metrics = learner.update(rollout(learner))
        assert {"train/lr", "train/explained_variance", "loss/policy"} <= set(metrics)  # also after an early stop
        counts[target_kl] = len(n)
    assert counts == {None: 8, 1e-9: 2, 1e6: 8}  # a tiny target stops after the first epoch's 2 minibatches


def _kl_run(target_kl):
    torch.manual_seed(0)
    cfg = PPOConfig(hidden=[8], num_minibatches=2, update_epochs=3, anneal_lr=False, lr=0.05, target_kl=target_kl)
    learner = PPO(cfg, OBS, gym.spaces.Discrete(3))
    kls = []
    real = learner.loss

    def loss(mb):
        out = real(mb)
        kls.append(out[1]["train/approx_kl"])
        return out

    learner.loss = loss
    learner.update(rollout(learner))
    return kls


def test_target_kl_equal_to_the_epochs_kl_does_not_stop():
    kls = _kl_run(None)
    assert len(kls) == 6 and 0 < float(kls[1]) < float(kls[3])  # the KL at the end of epochs 1 and 2
    # KL > target stops; KL == target (the first epoch's last) does not, the second epoch's larger KL then does
    assert len(_kl_run(float(kls[1]))) == 4
    assert len(_kl_run(float(kls[1]) * 0.999)) == 2


def test_tiny_minibatches_have_one_row_each():
    torch.manual_seed(0)
    learner = PPO(PPOConfig(hidden=[8], num_minibatches=4, update_epochs=1, anneal_lr=False), OBS, gym.spaces.Discrete(2))
    sizes = []
    real = learner.loss
    learner.loss = lambda mb: (sizes.append(len(mb["obs"])), real(mb))[1]
    learner.update(rollout(learner, T=3, N=1))  # 3 rows, 4 minibatches: 3 // 4 = 0 -> minibatches of 1 row
    assert sizes == [1, 1, 1]


def test_gradient_norm_clipping_is_applied():
    moved = {}
    for clip in (0.0, 1e-9):
        torch.manual_seed(0)
        cfg = PPOConfig(hidden=[8], update_epochs=1, num_minibatches=1, anneal_lr=False, lr=0.01, max_grad_norm=clip)
        learner = PPO(cfg, OBS, gym.spaces.Discrete(2))
        before = [p.detach().clone() for p in learner.modules.parameters()]
        learner.update(rollout(learner))
        moved[clip] = max(float((p.detach() - b).abs().max()) for p, b in zip(learner.modules.parameters(), before))
    # Adam's first step is about lr per weight; a gradient clipped to norm 1e-9 is far below Adam's eps 1e-5
    assert moved[0.0] == pytest.approx(0.01, rel=0.05) and moved[1e-9] < 1e-5


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


def test_weighted_surrogate_and_clipfrac_edge():
    loss, _ = clipped_surrogate(torch.zeros(2), torch.zeros(2), torch.tensor([2.0, 1.0]), 0.2, torch.tensor([3.0, 0.5]))
    assert float(loss) == pytest.approx(-(3.0 * 2.0 + 0.5 * 1.0) / 2)  # the weights multiply -A r before the mean
    ratio = torch.tensor([1.5, 1.25])  # |r - 1| = 0.5 exactly at the clip: not clipped; 0.25 inside
    _, info = clipped_surrogate(ratio.log(), torch.zeros(2), torch.ones(2), 0.5)
    assert float(info["train/clipfrac"]) == 0.0


def test_unclipped_value_loss_is_half_the_mse():
    v, ret = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])
    assert float(value_loss(v, torch.zeros(3), ret, None)) == pytest.approx(0.5 * (1 + 4 + 0) / 3)
    torch.manual_seed(0)
    learner = PPO(PPOConfig(hidden=[8], clip_vloss=False, clip_coef=0.01), OBS, gym.spaces.Discrete(2))
    mb = rollout(learner).reshape(-1)
    mb["value"] = mb["value"] + 5.0  # far from the new values: a clipped loss would differ
    _, info = learner.loss(mb)
    v = learner.critic(mb["obs"]).squeeze(-1)
    assert float(info["loss/value"]) == pytest.approx(float(0.5 * (v - mb["ret"]).pow(2).mean().detach()), rel=1e-5)
    assert {"loss/policy", "loss/value", "loss/entropy", "train/approx_kl", "train/clipfrac"} <= set(info)


@pytest.mark.parametrize("n", [1, 2])
def test_advantage_normalization_needs_two_rows_and_adds_eps_to_the_std(n):
    torch.manual_seed(0)
    learner = PPO(PPOConfig(hidden=[8], ent_coef=0.0, vf_coef=0.0, clip_coef=0.2), OBS, gym.spaces.Discrete(2))
    mb = rollout(learner).reshape(-1)[:n]
    dist = learner.dist(mb["obs"])
    mb["logp"] = dist.log_prob(mb["action"]).detach() - torch.tensor([0.0, 0.1])[:n]  # ratios 1 and e^0.1
    mb["adv"] = torch.tensor([0.7, 1e-8])[:n] if n == 1 else torch.tensor([0.0, 1e-8])
    loss, _ = learner.loss(mb)
    ratio = torch.tensor([1.0, math.exp(0.1)])[:n]
    if n == 1:  # one row: left as it is (a std of one value is undefined)
        expected = -0.7
    else:  # spread 1e-8: std 7.1e-9, so +-5e-9 / (std + 1e-8) = -+0.29
        a = torch.tensor([-5e-9, 5e-9]) / (torch.tensor([0.0, 1e-8]).std() + 1e-8)
        expected = float(-(a * ratio).mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-3)
