"""rlx.algos.gflownet_sampler: the fast step loop and the learner's dense loss path give exactly
what the plain formulation gives (same draws, rows, log-probabilities and gradients)."""

import math

import pytest
import torch
from tensordict import TensorDict

from rlx.algos import gflownet, gflownet_sampler
from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
from rlx.core.nets import SegmentCategorical
from rlx.envs.hypergrid import HyperGrid


class _Ragged:
    """The same env seen through the segment path (no fixed action width)."""

    action_width = None

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)


def _plain_sampler(env, model, n, generator):
    """The sampler as first written: the policy's SegmentCategorical, a draw, the env step and a
    compaction on every step, under no_grad; rows in the order they were appended."""
    rows, s, active = [], env.reset(n), torch.arange(n)
    with torch.no_grad():
        while s.shape[0]:
            logits, _ = model(s)
            dist = SegmentCategorical(logits, env.action_ptr(s), env.forward_mask(s), env.action_width)
            action = dist.sample(generator) - dist.ptr[:-1]
            nxt = env.step(s, action)
            stop = env.is_stop(action)
            rows.append((s["pos"], nxt["pos"], action, stop, active))
            s, active = nxt[~stop], active[~stop]
    return [torch.cat(c) for c in zip(*rows)]


@pytest.mark.parametrize("n", [1, 5, 40])
def test_sampler_draws_what_the_plain_loop_draws(n):
    """Batches below and above MLPPolicy.DEDUPE_ROWS, several generator states; steps where
    nothing stops skip the compaction, which must not change anything."""
    env = HyperGrid(3, 5)
    torch.manual_seed(0)
    model = MLPPolicy(env, 32, 2)
    for seed in range(3):
        store, terminal, log_r = gflownet_sampler.sample_trajectories(env, model, n, 0.0, torch.Generator().manual_seed(seed))
        obs, nxt, action, stop, traj = _plain_sampler(env, model, n, torch.Generator().manual_seed(seed))
        order = torch.sort(traj, stable=True).indices
        d = store.data
        assert torch.equal(d["obs"]["pos"], obs[order]) and torch.equal(d["next_obs"]["pos"], nxt[order])
        assert torch.equal(d["action"], action[order]) and torch.equal(d["terminated"], stop[order])
        assert torch.equal(d["traj"], traj[order]) and torch.equal(store.lengths, torch.bincount(traj, minlength=n))
        assert torch.equal(terminal["pos"], nxt[order][store.ptr[1:] - 1])
        assert torch.equal(log_r, env.log_reward(terminal))


def test_sampled_rows_are_ordinary_tensors():
    """The step loop runs under inference mode; nothing it returns is an inference tensor, so
    callers may change rows in place and use them with autograd."""
    env = HyperGrid(2, 4)
    learner = GFlowNet(GFlowNetConfig(), env, MLPPolicy(env, 16, 1))
    store, terminal, log_r = learner.sample(6)
    tensors = [*store.data.values(include_nested=True, leaves_only=True), store.ptr, *terminal.values(), log_r]
    assert tensors and not any(t.is_inference() for t in tensors)
    store.data["log_pb"].add_(0.0)  # an in-place change of an inference tensor would raise here
    info = learner.update(store.to_batch(log_reward=log_r))
    assert math.isfinite(info["loss/tb"]) and learner.log_z.grad is not None


def test_dense_loss_path_gives_the_categoricals_values_and_gradients():
    """log_pf_pb's dense path (fixed action width) against the SegmentCategorical it replaces."""
    env = HyperGrid(3, 5)
    torch.manual_seed(0)
    model = MLPPolicy(env, 32, 2)
    learner = GFlowNet(GFlowNetConfig(), env, model)
    store, _, _ = learner.sample(40)
    d, w = store.data, torch.randn(store.num_rows)
    results = []
    for dense in (True, False):
        model.zero_grad()
        if dense:
            log_pf, _, log_flow, _ = learner.log_pf_pb(store)
        else:
            dist, _, log_flow = gflownet_sampler._policy_dist(env, model, d["obs"])
            log_pf = dist.log_prob(dist.ptr[:-1] + d["action"])
        ((log_pf * w).sum() + log_flow.sum()).backward()
        results.append((log_pf.detach(), log_flow.detach(), [p.grad.clone() for p in model.parameters()]))
    (pf_a, flow_a, grads_a), (pf_b, flow_b, grads_b) = results
    assert torch.equal(pf_a, pf_b) and torch.equal(flow_a, flow_b) and bool((pf_a <= 0).all() & (pf_a > -math.inf).all())
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_mlp_policy_net_is_the_module_chain():
    env = HyperGrid(3, 4)
    for layers in (1, 2, 3):
        model = MLPPolicy(env, 16, layers, learned_pb=True)
        x = env.encode(TensorDict({"pos": torch.randint(0, 4, (9, 3))}, batch_size=[9]))
        assert torch.equal(model._net(x), model.head(model.act(model.trunk(x))))


def test_gflownet_module_keeps_the_sampler_names():
    assert gflownet.sample_trajectories is gflownet_sampler.sample_trajectories
    assert gflownet._policy_dist is gflownet_sampler._policy_dist


def test_log_pf_pb_segment_path_equals_the_dense_path():
    """An env without a fixed action width (molecules) takes log_pf_pb's SegmentCategorical path:
    on the same model and trajectories it gives the dense path's log P_F, log F and gradients."""
    env = HyperGrid(3, 5)
    torch.manual_seed(1)
    model = MLPPolicy(env, 32, 2)
    dense = GFlowNet(GFlowNetConfig(), env, model)
    ragged = GFlowNet(GFlowNetConfig(), _Ragged(env), model)
    store, _, _ = dense.sample(30)
    w = torch.randn(store.num_rows)
    out = []
    for learner in (dense, ragged):
        model.zero_grad()
        log_pf, log_pb, log_flow, _ = learner.log_pf_pb(store)
        ((log_pf * w).sum() + log_flow.sum()).backward()
        out.append((log_pf.detach(), log_pb, log_flow.detach(), [p.grad.clone() for p in model.parameters()]))
    (pf_a, pb_a, fl_a, g_a), (pf_b, pb_b, fl_b, g_b) = out
    torch.testing.assert_close(pf_b, pf_a, rtol=1e-6, atol=1e-6)
    assert torch.equal(pb_a, pb_b) and torch.equal(fl_a, fl_b) and bool((pf_b > -math.inf).all())
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
