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


class _NoAction(HyperGrid):
    """A broken HyperGrid whose mask allows nothing anywhere."""

    def forward_mask(self, states):
        return torch.zeros_like(super().forward_mask(states))


STUCK = ("{}: no allowed action in state(s) [0, 1, 2, 3, 4, 5, 6, 7] of the batch (empty or fully masked action "
         "set; the env's forward_mask must allow stop or a move)")


@pytest.mark.parametrize("ragged", [False, True])
def test_a_stuck_batch_is_one_line_naming_the_env_and_the_first_8_states(ragged):
    """Both draws (dense and segment) name the env's class and at most 8 stuck rows as a flat list."""
    env = _NoAction(2, 4)
    env = _Ragged(env) if ragged else env
    model = MLPPolicy(env, 8, 1)
    with pytest.raises(RuntimeError) as err:
        gflownet_sampler.sample_trajectories(env, model, 10, 0.0, torch.Generator().manual_seed(0))
    assert str(err.value) == STUCK.format(type(env).__name__)


@pytest.mark.parametrize("max_steps, stops", [(4, True), (3, False)])
def test_a_trajectory_may_take_max_steps_moves_and_then_must_stop(max_steps, stops):
    """On a 1-D grid of height 5 a policy that always moves makes 4 moves and then stops (the only
    allowed action at the edge): max_steps = 4 moves plus the stop are allowed, 3 are not."""
    env = HyperGrid(1, 5)
    env.max_steps = max_steps
    model = MLPPolicy(env, 8, 1)
    with torch.no_grad():
        model.head.bias[1] = 40.0  # move +e_0 wherever allowed
    sample = lambda: gflownet_sampler.sample_trajectories(env, model, 3, 0.0, torch.Generator().manual_seed(0))
    if stops:
        store, terminal, _ = sample()
        assert store.lengths.tolist() == [5, 5, 5] and terminal["pos"].tolist() == [[4]] * 3
    else:
        with pytest.raises(RuntimeError) as err:
            sample()
        assert str(err.value) == "HyperGrid did not stop within max_steps=3"


@pytest.mark.parametrize("width", [3, None])
def test_exploration_mixes_the_policy_with_the_uniform_over_allowed_actions(width):
    """(1 - eps) P_F + eps / #allowed on allowed actions, 0 on masked ones, dense and ragged."""
    logits = torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 3.0])
    mask = torch.tensor([True, True, False, True, True, True])
    ptr = torch.tensor([0, 3, 6])
    dist = SegmentCategorical(logits, ptr, mask, width)
    eps = 0.3
    p = torch.cat([torch.softmax(torch.tensor([0.0, 1.0]), 0), torch.zeros(1), torch.softmax(logits[3:], 0)])
    expected = (1 - eps) * p + eps * mask.float() / torch.tensor([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    mixed = gflownet_sampler._explore(dist, eps)
    torch.testing.assert_close(mixed.logits.exp(), expected)
    assert mixed.logits[2] == -math.inf
    assert mixed.width == width and torch.equal(mixed.ptr, ptr)  # a fixed width keeps the dense draw
    # ragged segments of different sizes (2 and 4 actions)
    if width is None:
        ptr2 = torch.tensor([0, 2, 6])
        mixed = gflownet_sampler._explore(SegmentCategorical(logits, ptr2, None), eps)
        p = torch.cat([torch.softmax(logits[:2], 0), torch.softmax(logits[2:], 0)])
        torch.testing.assert_close(mixed.logits.exp(), (1 - eps) * p + eps * torch.tensor([1 / 2] * 2 + [1 / 4] * 4))


@pytest.mark.parametrize("ragged", [False, True])
def test_the_sampler_explores_with_epsilon_on_both_paths(ragged):
    """With epsilon > 0 every step draws from `_explore`'s mixture (a fixed-width env too, which
    leaves its dense draw for the segment path): the draws of a plain loop that mixes by hand."""
    env = HyperGrid(3, 5)
    env = _Ragged(env) if ragged else env
    torch.manual_seed(0)
    model = MLPPolicy(env, 16, 1)
    with torch.no_grad():
        model.head.bias[0] = 6.0  # the policy all but always stops at once; exploration moves
    for seed in range(2):
        store, _, _ = gflownet_sampler.sample_trajectories(env, model, 40, 0.5, torch.Generator().manual_seed(seed))
        g, rows, s, active = torch.Generator().manual_seed(seed), [], env.reset(40), torch.arange(40)
        with torch.no_grad():
            while s.shape[0]:
                logits, _ = model(s)
                dist = SegmentCategorical(logits, env.action_ptr(s), env.forward_mask(s), env.action_width)
                dist = gflownet_sampler._explore(dist, 0.5)
                action = dist.sample(g) - dist.ptr[:-1]
                stop = env.is_stop(action)
                rows.append((action, active))
                s, active = env.step(s, action)[~stop], active[~stop]
        action, traj = (torch.cat(c) for c in zip(*rows))
        order = torch.sort(traj, stable=True).indices
        assert torch.equal(store.data["action"], action[order]) and torch.equal(store.data["traj"], traj[order])
        assert store.lengths.float().mean() > 1.2  # without exploration about 1.01: stop has P_F 0.99


class _ShapeChecked(HyperGrid):
    """A HyperGrid that records the batch size of every state batch the sampler hands to it."""

    seen: list

    def num_parents(self, states):
        self.seen.append((tuple(states.batch_size), states["pos"].shape[0]))
        return super().num_parents(states)


def test_the_env_gets_state_batches_with_their_batch_size():
    """The BatchedEnv protocol's states are TensorDicts [B]: an env may read B from the batch size
    (the concatenated next states of every step, given to num_parents at once, included)."""
    env = _ShapeChecked(2, 4)
    env.seen = []
    torch.manual_seed(0)
    store, _, _ = gflownet_sampler.sample_trajectories(env, MLPPolicy(env, 8, 1), 12, 0.0, torch.Generator().manual_seed(0))
    assert env.seen == [((store.num_rows,), store.num_rows)]


def test_trajectories_that_all_stop_at_once_are_one_step_each():
    """A single step of the loop (every trajectory stops at s_0): one row per trajectory, s_0 the terminal state."""
    env = HyperGrid(2, 4)
    model = MLPPolicy(env, 8, 1)
    with torch.no_grad():
        model.head.bias[0] = 40.0  # stop
    store, terminal, log_r = gflownet_sampler.sample_trajectories(env, model, 5, 0.0, torch.Generator().manual_seed(0))
    assert store.lengths.tolist() == [1] * 5 and store.data["terminated"].all() and store.data["t"].tolist() == [0] * 5
    assert terminal["pos"].tolist() == [[0, 0]] * 5 and torch.equal(log_r, env.log_reward(terminal))
