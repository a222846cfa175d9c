"""The fast paths of issue 20 compute exactly what the plain ones did: the batched ensemble,
its old-layout state dicts, column sampling, dict minibatches, one-copy metrics, preallocated
rollouts."""

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlx.core.buffers import ReplayBuffer, shuffled_minibatches
from rlx.core.learner import host_metrics
from rlx.core.nets import MLP, EnsembleMLP, EnsembleQ, legacy_ensemble_error


@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_is_n_mlps_built_in_a_row_and_loads_their_state(layer_norm):
    torch.manual_seed(0)
    mlps = nn.ModuleList(MLP(7, 1, hidden=[16, 16], act="relu", layer_norm=layer_norm) for _ in range(3))
    torch.manual_seed(0)
    q = EnsembleQ(4, 3, 3, hidden=[16, 16], act="relu", layer_norm=layer_norm)
    obs, act = torch.randn(5, 4), torch.randn(5, 3)
    want = torch.stack([m(torch.cat([obs, act], -1)).squeeze(-1) for m in mlps])  # [3, 5]
    torch.testing.assert_close(q(obs, act), want)  # same init, same RNG draws
    torch.testing.assert_close(q(obs, act, member=2), want[2])
    torch.manual_seed(1)
    other = EnsembleQ(4, 3, 3, hidden=[16, 16], act="relu", layer_norm=layer_norm)
    old = {f"qs.{k}": v for k, v in mlps.state_dict().items()}  # the layout before the batched module
    other.load_state_dict(old)
    torch.testing.assert_close(other(obs, act), want)
    with pytest.raises(ValueError, match="cannot be resumed"):
        legacy_ensemble_error({f"q.{k}": v for k, v in old.items()})
    legacy_ensemble_error({f"q.{k}": v for k, v in q.state_dict().items()})  # the new layout passes


def test_ensemble_gradients_match_the_member_mlps():
    torch.manual_seed(0)
    mlps = nn.ModuleList(MLP(6, 2, hidden=[8], act="tanh") for _ in range(2))
    torch.manual_seed(0)
    ens = EnsembleMLP(6, 2, 2, hidden=[8], act="tanh")
    x = torch.randn(4, 6)
    torch.stack([m(x) for m in mlps]).pow(2).sum().backward()
    ens(x).pow(2).sum().backward()
    torch.testing.assert_close(ens.weight0.grad, torch.stack([m[0].weight.grad.T for m in mlps]))
    torch.testing.assert_close(ens.bias1.grad[:, 0], torch.stack([m[2].bias.grad for m in mlps]))
    per_member = torch.randn(2, 4, 6)  # members may also take their own inputs
    torch.testing.assert_close(ens(per_member)[1], mlps[1](per_member[1]))


def test_replay_sample_is_row_indexing():
    buf = ReplayBuffer(50)
    buf.add({"x": torch.arange(40.0)[:, None].repeat(1, 3), "d": torch.arange(40) % 3 == 0})
    batch = buf.sample(16, torch.Generator().manual_seed(0))
    idx = torch.randint(40, (16,), generator=torch.Generator().manual_seed(0))
    assert isinstance(batch, TensorDict) and batch.batch_size == torch.Size([16])
    assert torch.equal(batch["x"], buf.data["x"][idx]) and torch.equal(batch["d"], buf.data["d"][idx])


def test_dict_minibatches_cover_every_row_once_like_tensordict_ones():
    data = {"a": torch.arange(10.0), "b": torch.arange(20).reshape(10, 2)}
    mbs = list(shuffled_minibatches(data, 4, torch.Generator().manual_seed(3)))
    tds = list(shuffled_minibatches(TensorDict(data, batch_size=[10]), 4, torch.Generator().manual_seed(3)))
    assert [len(m["a"]) for m in mbs] == [4, 4, 2] and sorted(torch.cat([m["a"] for m in mbs]).tolist()) == list(range(10))
    for m, t in zip(mbs, tds):
        assert torch.equal(m["a"], t["a"]) and torch.equal(m["b"], t["b"]) and torch.equal(m["b"][:, 0], 2 * m["a"].long())


def test_host_metrics_converts_tensors_and_floats():
    out = host_metrics({"loss/q": torch.tensor(1.5), "train/n": 3, "train/q_mean": torch.tensor([2.0], dtype=torch.float64)})
    assert out == {"loss/q": 1.5, "train/n": 3.0, "train/q_mean": 2.0} and all(type(v) is float for v in out.values())


def test_rollout_columns_are_preallocated_and_reused():
    from rlx.algos import PPO, PPOConfig
    from rlx.core.loops import OnPolicyLoop, TrainerConfig

    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    learner = PPO(PPOConfig(num_steps=5), envs.single_observation_space, envs.single_action_space)
    loop = OnPolicyLoop(learner, envs, TrainerConfig(progress=False, tensorboard=False), 5)
    loop.collect()
    first = {k: v.data_ptr() for k, v in loop.buffer.columns.items()}
    obs_before = loop.buffer.data["obs"].clone()
    loop.collect()
    assert {k: v.data_ptr() for k, v in loop.buffer.columns.items()} == first  # the same storage, rewritten
    assert not torch.equal(loop.buffer.data["obs"], obs_before)
    assert loop.buffer.data["reward"].data_ptr() == first["reward"] == loop.host["reward"].ctypes.data  # a host view
    assert torch.equal(loop.buffer.data["next_obs"][:-1][~(loop.buffer.data["terminated"] | loop.buffer.data["truncated"])[:-1]],
                       loop.buffer.data["obs"][1:][~(loop.buffer.data["terminated"] | loop.buffer.data["truncated"])[:-1]])
    envs.close()
