"""HyperGrid: exact enumeration, the four objectives at a hand-built perfect flow, learning."""

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
from rlx.envs.hypergrid import HyperGrid, l1_distance


class TablePolicy(nn.Module):
    """Logits and log-flows looked up per grid point: the perfect flow for a uniform P_B,
    F(s) = R(s) + sum_{c child of s} F(c) / |parents(c)| (Bengio et al. 2023, section 3),
    P_F(c | s) = F(c) / (|parents(c)| F(s)), P_F(stop | s) = R(s) / F(s)."""

    def __init__(self, env: HyperGrid):
        super().__init__()
        self.env = env
        states = env.all_states()
        pos, R = states["pos"], env.log_reward(states).exp().double()
        strides = env.height ** torch.arange(env.ndim)
        npar = env.num_parents(states).double()
        F = R.clone()
        level = pos.sum(1)
        for ell in range(int(level.max()), -1, -1):
            for s in torch.nonzero(level == ell).squeeze(-1).tolist():
                for d in range(env.ndim):
                    if pos[s, d] < env.height - 1:
                        c = s + int(strides[d])
                        F[s] += F[c] / npar[c]
        edge = torch.full((pos.shape[0], env.num_actions), -math.inf, dtype=torch.float64)
        edge[:, 0] = R.log()
        for d in range(env.ndim):
            ok = pos[:, d] < env.height - 1
            child = torch.nonzero(ok).squeeze(-1) + int(strides[d])
            edge[ok, d + 1] = (F[child] / npar[child]).log()
        self.edge = nn.Parameter(edge.float())  # log edge flows F(s -> s')
        self.log_flow = nn.Parameter(F.log().float())
        self.log_z = float(F[0].log())

    def forward(self, states):
        idx = self.env.state_index(states)
        return self.edge[idx].reshape(-1), self.log_flow[idx]


@pytest.mark.parametrize("objective", ["tb", "db", "subtb", "fm"])
def test_loss_zero_at_perfect_flow_and_positive_otherwise(objective):
    torch.manual_seed(0)
    env = HyperGrid(2, 4)
    model = TablePolicy(env)
    learner = GFlowNet(GFlowNetConfig(objective=objective, epsilon=0.3), env, model)
    with torch.no_grad():
        learner.log_z.fill_(model.log_z)
    store, _, log_r = learner.sample(64)
    loss, _ = learner.loss(store, log_r)
    assert float(loss.detach()) < 1e-8
    with torch.no_grad():  # perturb the flow of one visited state and of the edges out of it
        model.edge[env.state_index(store.data["obs"][3:4])] += 0.3
        model.log_flow[env.state_index(store.data["obs"][3:4])] += 0.3
        learner.log_z += 0.1
    loss, _ = learner.loss(store, log_r)
    assert float(loss.detach()) > 1e-4


def test_perfect_policy_samples_the_target():
    env = HyperGrid(2, 4)
    learner = GFlowNet(GFlowNetConfig(), env, TablePolicy(env))
    exact = env.terminal_distribution(learner.policy_log_probs)
    assert l1_distance(exact, env.target_distribution()) < 1e-5
    _, terminal, _ = learner.sample(20_000)
    assert l1_distance(env.empirical_distribution(terminal), env.target_distribution()) < 0.03


def test_enumeration_matches_sampling_for_an_untrained_policy():
    torch.manual_seed(0)
    env = HyperGrid(3, 4)
    learner = GFlowNet(GFlowNetConfig(), env, MLPPolicy(env, 32, 2))
    exact = env.terminal_distribution(learner.policy_log_probs)
    assert abs(float(exact.sum()) - 1.0) < 1e-5
    _, terminal, _ = learner.sample(20_000)
    assert l1_distance(env.empirical_distribution(terminal), exact) < 0.05


def test_env_rules():
    env = HyperGrid(2, 3)
    s = env.reset(2)
    s = env.step(s, torch.tensor([1, 2]))
    assert s["pos"].tolist() == [[1, 0], [0, 1]]
    s = env.step(s, torch.tensor([1, 0]))
    assert s["pos"].tolist() == [[2, 0], [0, 1]]
    assert env.forward_mask(s).reshape(2, 3).tolist() == [[True, False, True], [True, True, True]]
    assert env.num_parents(s).tolist() == [1, 1]
    with pytest.raises(ValueError, match="leaves the grid"):
        env.step(s, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="height >= 2"):
        HyperGrid(2, 1)
    assert abs(float(env.target_distribution().sum()) - 1) < 1e-6


@pytest.mark.parametrize("objective,extra", [("tb", {}), ("db", {}), ("subtb", {}), ("fm", {}),
                                             ("tb", {"learned_pb": True}), ("tb", {"replay_size": 32, "epsilon": 0.05})])
def test_tiny_hypergrid_learns_target(objective, extra):
    torch.manual_seed(0)
    env = HyperGrid(2, 4)
    cfg = GFlowNetConfig(objective=objective, hidden=32, batch_size=16, lr=5e-3, **extra)
    learner = GFlowNet(cfg, env, MLPPolicy(env, cfg.hidden, cfg.num_layers, cfg.learned_pb))
    learner.generator.manual_seed(0)
    target = env.target_distribution()
    start = l1_distance(env.terminal_distribution(learner.policy_log_probs), target)
    for _ in range(150 if objective in ("tb", "subtb") else 300):  # DB and FM propagate reward one edge per step
        store, _, log_r = learner.sample(cfg.batch_size)
        learner.update(store.to_batch(log_reward=log_r))
    l1 = l1_distance(env.terminal_distribution(learner.policy_log_probs), target)
    assert start > 0.2 and l1 < 0.06, (start, l1)
    if objective != "fm":
        assert abs(learner.estimated_log_z() - env.log_partition()) < 0.2


def test_bad_config_is_one_clear_error():
    env = HyperGrid(2, 3)
    with pytest.raises(ValueError, match="objective"):
        GFlowNet(GFlowNetConfig(objective="xx"), env, MLPPolicy(env, 8, 1))
    with pytest.raises(ValueError, match="epsilon"):
        GFlowNet(GFlowNetConfig(epsilon=1.0), env, MLPPolicy(env, 8, 1))


def test_cli_trains_and_writes_summary(tmp_path):
    from rlx.train import main

    assert main(["algo=gflownet", "env=hypergrid_small", "algo.objective=db", "algo.hidden=16",
                 "trainer.total_steps=160", "trainer.eval_every=0", "algo.eval_samples=200",
                 f"trainer.run_dir={tmp_path}", "trainer.progress=false", "trainer.tensorboard=false"]) == 0
    import json
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"eval/l1", "eval/l1_empirical", "eval/log_z_error", "loss/db"} <= set(summary)


def test_evaluation_does_not_change_training(tmp_path):
    """Mid-training evaluations sample from the learner's generator and then restore it: the training
    curve is the same with and without them (scripts/gflownet_hypergrid.py reads it from metrics.jsonl)."""
    import json

    from rlx.train import main

    curves = []
    for every in (0, 48):
        run = tmp_path / f"e{every}"
        assert main(["algo=gflownet", "env=hypergrid_small", "algo.hidden=16", "trainer.total_steps=160",
                     f"trainer.eval_every={every}", "algo.eval_samples=64", f"trainer.run_dir={run}",
                     "trainer.progress=false", "trainer.tensorboard=false"]) == 0
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curves.append(rows)
    assert sum("eval/l1" in r for r in curves[1]) == 4  # at 48, 96, 144 and the end
    assert [r["loss/tb"] for r in curves[0] if "loss/tb" in r] == [r["loss/tb"] for r in curves[1] if "loss/tb" in r]
    assert curves[0][-1]["eval/l1"] == curves[1][-1]["eval/l1"]


def test_state_dict_round_trip_keeps_replay_and_policy(tmp_path):
    from rlx.core.checkpoint import load_checkpoint, save_checkpoint

    env = HyperGrid(2, 4)
    cfg = GFlowNetConfig(replay_size=8, hidden=16)
    a = GFlowNet(cfg, env, MLPPolicy(env, 16, 2))
    for _ in range(3):
        store, _, log_r = a.sample(8)
        a.update(store.to_batch(log_reward=log_r))
    save_checkpoint(tmp_path / "c.pt", a.state_dict())
    b = GFlowNet(cfg, env, MLPPolicy(env, 16, 2))
    b.load_state_dict(load_checkpoint(tmp_path / "c.pt"))
    assert torch.equal(b.replay[1], a.replay[1]) and b.replay[0].num_episodes == 8
    states = env.all_states()
    assert torch.allclose(a.policy_log_probs(states), b.policy_log_probs(states))
    assert torch.equal(a.sample(4)[1]["pos"], b.sample(4)[1]["pos"])  # same generator state


class _DeadEndGrid(HyperGrid):
    """HyperGrid whose mask allows nothing in states with pos[0] == 1 (a broken env)."""

    def forward_mask(self, states):
        mask = super().forward_mask(states).reshape(states.shape[0], -1)
        return (mask & (states["pos"][:, :1] != 1)).reshape(-1)


class _RaggedDeadEnd:
    """The same broken env seen through the ragged (segment) path: no fixed action width."""

    action_width = None

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)


@pytest.mark.parametrize("ragged", [False, True])
def test_fully_masked_state_raises_instead_of_a_negative_action(ragged):
    env = _DeadEndGrid(2, 4)
    env = _RaggedDeadEnd(env) if ragged else env
    learner = GFlowNet(GFlowNetConfig(), env, MLPPolicy(env, 16, 1))
    s = env.reset(3)
    s["pos"][1, 0] = 1  # state 1 has no allowed action
    with pytest.raises(RuntimeError, match=r"no allowed action in state\(s\) \[1\]"):
        learner.act(s)
    with pytest.raises(RuntimeError, match="no allowed action"):
        learner.act(s, deterministic=True)
    ok = env.reset(3)  # states with allowed actions still sample legal local indices
    out = learner.act(ok)
    assert ((out["action"] >= 0) & (out["action"] < env.num_actions)).all() and torch.isfinite(out["logp"]).all()


@pytest.mark.parametrize("ragged", [False, True])
def test_sampler_stops_at_a_state_with_no_allowed_action(ragged):
    env = _DeadEndGrid(2, 4)
    env = _RaggedDeadEnd(env) if ragged else env
    learner = GFlowNet(GFlowNetConfig(), env, MLPPolicy(env, 16, 1))
    with torch.no_grad():  # push every state towards +e_0, so some trajectory reaches pos[0] == 1
        learner.model.head.bias[1] = 20.0
    with pytest.raises(RuntimeError, match="no allowed action in state"):
        learner.sample(8)


def test_dense_sampler_draws_the_segment_paths_actions():
    """The sampler's dense draw (fixed-width action sets) gives the actions, probabilities and rows
    of the generic segment path for the same generator state."""
    from rlx.algos import gflownet as G

    env = HyperGrid(3, 5)
    model = MLPPolicy(env, 32, 2)
    ragged = _RaggedDeadEnd(env)  # the same env without a fixed action width: the segment path
    for seed in range(3):
        dense = G.sample_trajectories(env, model, 32, 0.0, torch.Generator().manual_seed(seed))
        generic = G.sample_trajectories(ragged, model, 32, 0.0, torch.Generator().manual_seed(seed))
        assert torch.equal(dense[0].ptr, generic[0].ptr)
        for key in ("action", "log_pb", "terminated", "traj", "t"):
            assert torch.equal(dense[0].data[key], generic[0].data[key]), key
        assert torch.equal(dense[1]["pos"], generic[1]["pos"]) and torch.equal(dense[2], generic[2])


def test_mlp_policy_computes_each_distinct_state_once_with_the_same_values_and_gradients(monkeypatch):
    """And inputs that are not 0/1 (rows whose keys could collide) take the plain MLP."""
    env = HyperGrid(3, 4)
    torch.manual_seed(0)
    model = MLPPolicy(env, 16, 2, learned_pb=True)
    states = TensorDict({"pos": torch.randint(0, 4, (200, 3))}, batch_size=[200])  # many repeats
    rows = []
    net = model._net
    monkeypatch.setattr(model, "_net", lambda x: rows.append(x.shape[0]) or net(x))
    w = torch.randn(200 * env.num_actions)

    def run():
        model.zero_grad()
        logits, log_flow = model(states)
        ((logits * w).sum() + log_flow.sum() + model.backward_logits(states).sum()).backward()
        return logits.detach(), log_flow.detach(), [p.grad.clone() for p in model.parameters()]

    deduped = run()
    assert rows == [len(torch.unique(env.state_index(states)))] * 2 and rows[0] < 64
    monkeypatch.setattr(MLPPolicy, "DEDUPE_ROWS", 10**9)
    plain = run()
    # the deduplicated backward sums each state's 200-row gradient in another order: float32 rounding
    for a, b in zip(deduped[:2] + tuple(deduped[2]), plain[:2] + tuple(plain[2])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(MLPPolicy, "DEDUPE_ROWS", 32)
    rows.clear()
    colliding = torch.tensor([[1.0, 0.0], [0.0, 0.5]]).repeat(30, 1)  # both rows have the key 1
    monkeypatch.setattr(env, "encode", lambda s: colliding)
    model.trunk[0] = nn.Linear(2, 16)
    model(states[:60])
    assert rows == [60]
