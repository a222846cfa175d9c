"""The GFlowNet learner's update on small hand-checked cases: the reward temperature beta on every
objective, the prioritized replay (which trajectories it keeps and how many it mixes in), the
metrics of an update, and the learned backward policy's log P_B."""

import pytest
import torch

import rlx.algos.gflownet as gfn
from rlx.algos.gflownet import GFlowNet, GFlowNetConfig, MLPPolicy
from rlx.core.buffers import EpisodeStore
from rlx.envs.hypergrid import HyperGrid


def make(**kw):
    torch.manual_seed(0)
    env = HyperGrid(2, 4)
    return GFlowNet(GFlowNetConfig(**kw), env, MLPPolicy(env, hidden=16, learned_pb=kw.get("learned_pb", False)))


@pytest.mark.parametrize("objective", ["tb", "db", "subtb"])
def test_every_objective_targets_r_to_the_beta(objective, monkeypatch):
    learner = make(objective=objective, beta=3.0, subtb_lambda=0.7)
    store, _, log_r = learner.sample(8)
    seen = {}
    real = getattr(gfn, {"tb": "trajectory_balance", "db": "detailed_balance", "subtb": "subtrajectory_balance"}[objective])

    def capture(*args):
        seen["args"] = args
        return real(*args)

    monkeypatch.setattr(gfn, real.__name__, capture)
    loss, info = learner.loss(store, log_r)
    args = seen["args"]
    torch.testing.assert_close(args[3], 3.0 * log_r)  # log R^beta
    torch.testing.assert_close(args[4], store.ptr)
    if objective == "subtb":
        assert args[5] == 0.7
    if objective == "tb":
        assert args[0] is learner.log_z
    assert info[f"loss/{objective}"] == pytest.approx(float(loss.detach())) and "train/log_z" in info


def test_update_reports_the_sampled_batch_and_steps_log_z():
    learner = make(objective="tb", lr_log_z=0.5)
    store, _, log_r = learner.sample(8)
    before = float(learner.log_z.detach())
    info = learner.update(store.to_batch(log_reward=log_r))
    assert info["train/log_reward_mean"] == pytest.approx(float(log_r.mean()))
    assert info["train/length_mean"] == pytest.approx(float(store.lengths.float().mean()))
    assert info["train/log_z"] == pytest.approx(before)  # reported before the step
    assert float(learner.log_z.detach()) != before


def _store(log_rewards, env):
    """One-step trajectories (stop at s_0) with the given log-rewards, told apart by their `t` column."""
    n = len(log_rewards)
    learner = make()
    store, _, _ = learner.sample(n)
    lengths = torch.ones(n, dtype=torch.long)
    rows = torch.cat([store.data[int(p): int(p) + 1] for p in store.ptr[:-1]])
    rows["tag"] = torch.arange(n, dtype=torch.float32)
    return EpisodeStore(rows, torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])), torch.tensor(log_rewards)


def test_replay_keeps_the_best_trajectories_and_mixes_in_a_fraction():
    learner = make(replay_size=3, replay_fraction=0.5)
    first, r1 = _store([0.0, 5.0, 1.0, 3.0], learner.env)
    batch, r = learner._with_replay(first, r1)
    assert batch is first and torch.equal(r, r1)  # nothing in the replay yet: the batch as sampled
    kept_store, kept_r = learner.replay
    assert kept_r.tolist() == [5.0, 3.0, 1.0] and kept_store.data["tag"].tolist() == [1.0, 3.0, 2.0]
    second, r2 = _store([4.0, -1.0, 0.5, 2.0], learner.env)
    second.data["tag"] += 10
    batch, r = learner._with_replay(second, r2)
    # round(0.5 * 4) = 2 replayed trajectories after the 4 sampled ones
    assert batch.num_episodes == 6 and torch.equal(r[:4], r2)
    assert set(r[4:].tolist()) <= {5.0, 3.0, 1.0} and len(set(r[4:].tolist())) == 2
    tags = batch.data["tag"]
    assert tags[:4].tolist() == [10.0, 11.0, 12.0, 13.0] and set(tags[4:].tolist()) <= {1.0, 2.0, 3.0}
    for tag, lr in zip(tags[4:].tolist(), r[4:].tolist()):  # each replayed row keeps its own reward
        assert {1.0: 5.0, 3.0: 3.0, 2.0: 1.0}[tag] == lr
    assert learner.replay[1].tolist() == [5.0, 4.0, 3.0]  # the best 3 of the old replay and the new batch
    assert learner.replay[0].data["tag"].tolist() == [1.0, 10.0, 3.0]
    off = make(replay_size=0)
    s, rr = _store([1.0, 2.0], off.env)
    assert off._with_replay(s, rr)[0] is s and off.replay is None


def test_learned_backward_policy_gives_log_pb_of_the_undoing_action():
    learner = make(objective="tb", learned_pb=True)
    store, _, _ = learner.sample(16)
    log_pf, log_pb, _, _ = learner.log_pf_pb(store)
    d = store.data
    moves = ~d["terminated"]
    assert moves.any() and (log_pb[~moves] == 0).all()  # exit rows have no backward step
    nxt = d["next_obs"][moves]
    back = learner.model.backward_logits(nxt).masked_fill(~learner.env.backward_mask(nxt), float("-inf"))
    expected = back.log_softmax(-1).gather(1, (d["action"][moves] - 1)[:, None]).squeeze(1)
    torch.testing.assert_close(log_pb[moves], expected)
    assert (log_pb[moves] < 0).any()  # a state with two parents splits its backward mass
    uniform = make(objective="tb")
    _, pb, _, _ = uniform.log_pf_pb(store)
    torch.testing.assert_close(pb, d["log_pb"])  # without learned_pb: the env's uniform log P_B


def test_float64_rewards_enter_the_flow_tables_in_their_dtype():
    log_f, log_pf, log_pb = torch.tensor([1.0, 0.5, 0.3]), torch.tensor([0.2, -0.1, 0.4]), torch.tensor([0.1, 0.0, 0.0])
    ptr, log_r = torch.tensor([0, 2, 3]), torch.tensor([0.0, 1.0])
    db = gfn.detailed_balance(log_f, log_pf, log_pb, log_r.double(), ptr)
    sub = gfn.subtrajectory_balance(log_f, log_pf, log_pb, log_r.double(), ptr, 0.9)
    assert float(db) == pytest.approx(float(gfn.detailed_balance(log_f, log_pf, log_pb, log_r, ptr)))
    assert float(sub) == pytest.approx(float(gfn.subtrajectory_balance(log_f, log_pf, log_pb, log_r, ptr, 0.9)))


def test_update_clips_the_gradient_norm():
    moved = {}
    for clip in (0.0, 1e-12):
        learner = make(objective="tb", max_grad_norm=clip, lr=0.01)
        store, _, log_r = learner.sample(8)
        before = [p.detach().clone() for p in learner.model.parameters()]
        learner.update(store.to_batch(log_reward=log_r))
        moved[clip] = max(float((p.detach() - q).abs().max()) for p, q in zip(learner.model.parameters(), before))
    assert moved[0.0] > 5e-3 and moved[1e-12] < 1e-4  # a gradient clipped to norm 1e-12 is far below Adam's eps


def test_a_replay_of_one_keeps_the_best_and_draws_with_the_learners_generator():
    learner = make(replay_size=1, replay_fraction=1.0)
    first, r1 = _store([0.0, 5.0, 1.0], learner.env)
    learner._with_replay(first, r1)
    assert learner.replay[1].tolist() == [5.0]
    # the replayed trajectories are randperm(replay)[:k] of the learner's own generator, whatever the
    # global stream: 10 of 20 in an order a draw from another stream repeats with probability 1 / 20!/10!
    big = make(replay_size=20, replay_fraction=0.5)
    big._with_replay(*_store([float(i) for i in range(20)], big.env))
    g = torch.Generator()
    g.set_state(big.generator.get_state())
    expected = big.replay[1][torch.randperm(20, generator=g)[:10]]
    torch.manual_seed(123)  # the global stream differs from the learner's generator
    batch, r = big._with_replay(*_store([30.0 + i for i in range(20)], big.env))
    assert batch.num_episodes == 30 and torch.equal(r[20:], expected)
