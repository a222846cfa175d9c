"""PPO's batched actor-critic network and the per-step helpers of its rollouts: the network starts
as the separate critic and actor MLPs it replaced (same RNG draws), old checkpoints' networks
convert, the numpy statistics equal the torch ones, Box actions are clipped in one call."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlx.algos import PPO, PPOConfig
from rlx.algos.ppo import ClipBoxActions
from rlx.core.nets import MLP, EnsembleMLP, RunningMeanStd

OBS = gym.spaces.Box(-1, 1, (5,))


def test_members_of_different_widths_pad_with_zero_columns_that_stay_zero():
    torch.manual_seed(0)
    mlps = [MLP(5, 1, (8, 8), "tanh", out_gain=1.0), MLP(5, 3, (8, 8), "tanh", out_gain=0.01)]
    torch.manual_seed(0)
    ens = EnsembleMLP(5, [1, 3], 2, hidden=(8, 8), act="tanh", out_gains=[1.0, 0.01])
    x = torch.randn(7, 5)
    out = ens(x)  # [2, 7, 3]
    assert out.shape == (2, 7, 3) and ens.out_dims == [1, 3]
    torch.testing.assert_close(out[0, :, :1], mlps[0](x))
    torch.testing.assert_close(out[1], mlps[1](x))
    assert torch.equal(out[0, :, 1:], torch.zeros(7, 2))  # the critic's padding
    torch.testing.assert_close(ens(x, member=0), mlps[0](x))  # member=i: its own columns only
    (out[0, :, 0].sum() + out[1].pow(2).sum()).backward()
    assert torch.equal(ens.weight2.grad[0, :, 1:], torch.zeros(8, 2)) and torch.equal(ens.bias2.grad[0, :, 1:], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="one per member"):
        EnsembleMLP(5, [1, 3, 2], 2)


@pytest.mark.parametrize("discrete", [True, False])
def test_network_starts_as_the_separate_critic_and_actor(discrete):
    act = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,))
    torch.manual_seed(4)
    learner = PPO(PPOConfig(hidden=[16, 16], log_std_init=-0.5), OBS, act)
    torch.manual_seed(4)  # the layers the learner used to build, in the same order
    critic, actor = MLP(5, 1, (16, 16), "tanh", out_gain=1.0), MLP(5, 3 if discrete else 2, (16, 16), "tanh", out_gain=0.01)
    x = torch.randn(6, 5)
    out, value = learner.net(x)
    assert torch.equal(out, actor(x)) or torch.allclose(out, actor(x), atol=1e-6)
    torch.testing.assert_close(value, critic(x).squeeze(-1))
    torch.testing.assert_close(learner.critic(x), critic(x))
    if not discrete:
        assert torch.equal(learner.net.log_std.detach(), torch.full((2,), -0.5))


def _old_modules(discrete: bool) -> nn.ModuleDict:
    """The layout of PPO's modules before the batched network (actor and critic MLPs)."""
    from rlx.core.nets import GaussianHead

    critic = MLP(5, 1, (16, 16), "tanh", out_gain=1.0)
    if discrete:
        actor = MLP(5, 3, (16, 16), "tanh", out_gain=0.01)
    else:
        actor = nn.Sequential(MLP(5, 16, (16,), "tanh"), nn.Tanh(), GaussianHead(16, 2, log_std_init=-0.3))
    return nn.ModuleDict({"actor": actor, "critic": critic})


@pytest.mark.parametrize("discrete", [True, False])
def test_an_old_checkpoints_networks_convert_and_a_resume_is_one_clear_error(discrete):
    act = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,))
    torch.manual_seed(1)
    old = _old_modules(discrete)
    learner = PPO(PPOConfig(hidden=[16, 16]), OBS, act)
    learner.modules.load_state_dict(old.state_dict())
    x = torch.randn(4, 5)
    out, value = learner.net(x)
    torch.testing.assert_close(value, old["critic"](x).squeeze(-1))
    if discrete:
        torch.testing.assert_close(out, old["actor"](x))
    else:
        dist = old["actor"](x)
        torch.testing.assert_close(out, dist.mean)
        torch.testing.assert_close(learner.dist(x).log_std, dist.log_std)
    state = learner.state_dict()
    state["modules"] = old.state_dict()
    with pytest.raises(ValueError, match="before PPO's actor and critic became one batched network.*start a new run"):
        learner.load_state_dict(state)


def test_numpy_statistics_equal_the_torch_path():
    fast, slow = RunningMeanStd((3,)), RunningMeanStd((3,))
    g = torch.Generator().manual_seed(0)
    for rows in (1, 5, 1, 64):
        x = torch.randn(rows, 3, generator=g) * 4 + 2
        fast.update(x)
        slow.update(x.clone().requires_grad_())  # needing gradients: the torch path
    for k in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(fast, k), getattr(slow, k), rtol=1e-12, atol=1e-12)
    x = torch.randn(8, 3, generator=g) * 30
    normalized = fast.normalize(x)
    assert torch.equal(normalized, slow.normalize(x.clone().requires_grad_()).detach())  # same float32 ops
    assert float(normalized.abs().max()) == 10.0  # clipped


def test_box_actions_are_clipped_to_the_bounds_in_one_call():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * 2)  # bounds +-2
    seen = []
    envs.step = lambda a: seen.append(a) or (None,) * 5
    wrapped = ClipBoxActions(envs)
    wrapped.step(np.array([[5.0], [-1.0]], dtype=np.float32))
    assert seen[0].tolist() == [[2.0], [-1.0]]
    with pytest.raises(ValueError, match="needs a Box action space"):
        ClipBoxActions(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")]))
