"""RolloutBuffer, ReplayBuffer and EpisodeStore on hand-computed cases: storage, the GAE
arguments (gamma vs lambda, termination vs truncation), wrap-around, state round trips,
geometric future sampling, and every validation message."""

import math

import pytest
import torch
from tensordict import TensorDict

from rlx.core.buffers import EpisodeStore, ReplayBuffer, RolloutBuffer, compute_advantages, shuffled_minibatches


def _step(r, v, nv, term, trunc):
    return {"reward": torch.tensor([r]), "value": torch.tensor([v]), "next_value": torch.tensor([nv]),
            "terminated": torch.tensor([term]), "truncated": torch.tensor([trunc])}


def test_rollout_buffer_allocates_writes_rows_and_refuses_a_full_buffer():
    buf = RolloutBuffer(2, 3)
    assert not buf.full
    buf.add({"obs": torch.ones(3, 4, dtype=torch.float64), "action": torch.tensor([1, 2, 3])})
    assert buf.data.batch_size == torch.Size([2, 3]) and buf.data["obs"].shape == (2, 3, 4)
    assert buf.data["obs"].dtype == torch.float64 and buf.data["action"].dtype == torch.int64
    assert not buf.full
    buf.add({"obs": torch.full((3, 4), 2.0, dtype=torch.float64), "action": torch.tensor([4, 5, 6])})
    assert buf.full and buf.data["action"].tolist() == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(RuntimeError, match=r"RolloutBuffer is full \(2 steps\); call reset\(\)"):
        buf.add({"obs": torch.zeros(3, 4, dtype=torch.float64), "action": torch.zeros(3, dtype=torch.int64)})
    buf.reset()
    assert not buf.full
    buf.add({"obs": torch.zeros(3, 4, dtype=torch.float64), "action": torch.tensor([7, 8, 9])})
    assert buf.data["action"].tolist() == [[7, 8, 9], [4, 5, 6]]  # row 0 rewritten in place


@pytest.mark.parametrize("term,trunc,adv0", [
    (False, False, 1.0 + 0.5 * 1.0 - 0.5 + 0.5 * 0.8 * 3.0),  # delta_0 + gamma lambda adv_1
    (False, True, 1.0 + 0.5 * 1.0 - 0.5),                     # truncated: bootstraps, the recursion stops
    (True, False, 1.0 - 0.5),                                 # terminated: no bootstrap, no recursion
])
def test_rollout_advantages_use_gamma_lambda_and_the_two_dones(term, trunc, adv0):
    buf = RolloutBuffer(2, 1)
    buf.add(_step(1.0, 0.5, 1.0, term, trunc))
    buf.add(_step(2.0, 1.0, 4.0, False, False))
    d = buf.compute_advantages(gamma=0.5, lam=0.8)
    adv1 = 2.0 + 0.5 * 4.0 - 1.0  # the last step bootstraps from next_value
    torch.testing.assert_close(d["adv"][:, 0], torch.tensor([adv0, adv1]))
    torch.testing.assert_close(d["ret"][:, 0], torch.tensor([adv0 + 0.5, adv1 + 1.0]))


def test_compute_advantages_fills_a_whole_batch_in_place():
    data = TensorDict({"reward": torch.tensor([[1.0], [2.0]]), "value": torch.tensor([[0.5], [1.0]]),
                       "next_value": torch.tensor([[1.0], [4.0]]), "terminated": torch.zeros(2, 1, dtype=torch.bool),
                       "truncated": torch.zeros(2, 1, dtype=torch.bool)}, batch_size=[2, 1])
    out = compute_advantages(data, gamma=0.5, lam=0.8)
    assert out is data
    torch.testing.assert_close(data["adv"][:, 0], torch.tensor([2.2, 3.0]))


def test_shuffled_minibatches_cover_every_row_once_in_a_seeded_order():
    data = TensorDict({"x": torch.arange(7)}, batch_size=[7])
    batches = list(shuffled_minibatches(data, 3, torch.Generator().manual_seed(0)))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    rows = torch.cat([b["x"] for b in batches]).tolist()
    assert sorted(rows) == list(range(7))
    again = torch.cat([b["x"] for b in shuffled_minibatches(data, 3, torch.Generator().manual_seed(0))]).tolist()
    assert again == rows
    orders = {tuple(torch.cat([b["x"] for b in shuffled_minibatches(data, 7, torch.Generator().manual_seed(s))]).tolist())
              for s in range(5)}
    assert len(orders) > 1  # shuffled, not the identity


def test_replay_buffer_keeps_only_the_newest_rows_and_counts_them():
    buf = ReplayBuffer(3)
    assert len(buf) == 0
    buf.add({"x": torch.tensor([0.0, 1.0])})
    assert len(buf) == 2 and buf.pos == 2
    buf.add({"x": torch.tensor([2.0, 3.0])})  # wraps: 3 overwrites 0
    assert buf.data["x"].tolist() == [3.0, 1.0, 2.0] and len(buf) == 3 and buf.pos == 1
    buf.add({"x": torch.arange(10.0, 15.0)})  # 5 rows into 3: the last 3 survive, the newest just before pos
    assert sorted(buf.data["x"].tolist()) == [12.0, 13.0, 14.0] and len(buf) == 3 and buf.pos == 1
    assert buf.data["x"][buf.pos - 1] == 14.0
    exact = ReplayBuffer(3)
    exact.add({"x": torch.arange(3.0)})  # exactly the capacity: no wrap
    assert exact.data["x"].tolist() == [0.0, 1.0, 2.0] and exact.pos == 0 and len(exact) == 3


def test_replay_buffer_state_keeps_the_write_position_of_a_wrapped_buffer():
    buf = ReplayBuffer(4)
    buf.add({"x": torch.arange(6.0)})  # rows 2..5 in slots [4, 5, 2, 3], next write at slot 2
    other = ReplayBuffer(4)
    other.load_state_dict(buf.state_dict())
    other.add({"x": torch.tensor([6.0])})  # must overwrite the oldest row (2)
    assert sorted(other.data["x"].tolist()) == [3.0, 4.0, 5.0, 6.0]
    empty = ReplayBuffer(4)
    state = empty.state_dict()
    assert state == {"capacity": 4, "size": 0, "pos": 0, "data": None}
    loaded = ReplayBuffer(4)
    loaded.load_state_dict(state)
    assert len(loaded) == 0 and loaded.data is None
    with pytest.raises(ValueError, match="replay buffer capacity 3 != the checkpoint's 4; resume with the same"):
        ReplayBuffer(3).load_state_dict(buf.state_dict())


def test_replay_buffer_samples_only_filled_rows():
    buf = ReplayBuffer(100)
    with pytest.raises(RuntimeError, match="cannot sample from an empty ReplayBuffer"):
        buf.sample(1)
    buf.add(TensorDict({"x": torch.tensor([5.0, 7.0])}, batch_size=[2]))
    idx = buf.sample_indices(500, torch.Generator().manual_seed(0))
    assert idx.shape == (500,) and set(idx.tolist()) == {0, 1}
    batch = buf.sample(500, torch.Generator().manual_seed(0))
    assert batch.batch_size == torch.Size([500]) and set(batch["x"].tolist()) == {5.0, 7.0}
    with pytest.raises(RuntimeError, match="sample_future needs episode boundaries"):
        buf.sample_future(idx, 0.5)


def _store(lengths):
    rows = sum(lengths)
    done = torch.zeros(rows, dtype=torch.bool)
    done[torch.tensor(lengths).cumsum(0) - 1] = True
    return EpisodeStore.from_episodes([TensorDict({"x": torch.arange(s, s + n), "reward": torch.arange(s, s + n),
                                                   "terminated": done[s : s + n], "truncated": torch.zeros(n, dtype=torch.bool)},
                                                  batch_size=[n]) for s, n in zip([0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]], lengths)])


def test_sample_future_is_geometric_in_the_offset_and_stops_at_the_episode_end():
    buf = ReplayBuffer.from_episodes(_store([200, 3]))
    assert len(buf) == 203 and buf.data["x"].tolist() == list(range(203))
    g = torch.Generator().manual_seed(0)
    n = 40_000
    offset = buf.sample_future(torch.zeros(n, dtype=torch.int64), 0.5, g)  # from row 0 of the long episode
    freq = torch.bincount(offset, minlength=5)[:5].float() / n
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.5, 0.25, 0.125, 0.0625]), atol=0.01, rtol=0)
    near_end = buf.sample_future(torch.full((n,), 198), 0.5, g)  # offsets >= 1 are cut at the last row 199
    assert set(near_end.tolist()) == {199}
    uniform = buf.sample_future(torch.full((n,), 200), 1.0, g)  # discount 1: uniform over the 2 later rows
    freq = torch.bincount(uniform - 200, minlength=3).float() / n
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.5, 0.5]), atol=0.01, rtol=0)
    assert buf.sample_future(torch.tensor([202, 199]), 0.9, g).tolist() == [202, 199]  # an episode's last row: itself
    assert buf.sample_future(torch.tensor([202, 199]), 1.0, g).tolist() == [202, 199]
    far = buf.sample_future(torch.zeros(n, dtype=torch.int64), 0.99, g)
    # E[min(K, 199)] for K ~ Geometric(0.01) on {1, 2, ...}: sum_{k < 199} 0.99^k
    assert float(far.float().mean()) == pytest.approx((1 - 0.99**199) / 0.01, rel=0.03)
    buf.add({k: v[:1] for k, v in buf.data.items()})
    with pytest.raises(RuntimeError, match="needs episode boundaries"):  # writes forget the boundaries
        buf.sample_future(torch.zeros(1, dtype=torch.int64), 0.5)


def test_episode_store_validates_its_offsets():
    data = TensorDict({"x": torch.arange(3)}, batch_size=[3])
    for ptr in ([1, 3], [0, 2], [0, 2, 1, 3], [[0, 3]]):
        with pytest.raises(ValueError, match="ptr must be non-decreasing offsets from 0 to 3 rows"):
            EpisodeStore(data, torch.tensor(ptr))
    assert EpisodeStore(data, [0, 0, 3]).lengths.tolist() == [0, 3]  # an empty episode is allowed
    with pytest.raises(ValueError, match="needs at least one episode"):
        EpisodeStore.from_episodes([])
    with pytest.raises(ValueError, match="concat needs at least one store"):
        EpisodeStore.concat([])


def test_episode_store_views_and_counts():
    store = _store([2, 3])
    assert (store.num_episodes, store.num_rows) == (2, 5) and store.ptr.dtype == torch.int64
    assert store.lengths.tolist() == [2, 3] and store.segment_ids().tolist() == [0, 0, 1, 1, 1]
    assert store.episode(1)["x"].tolist() == [2, 3, 4]
    ret = store.episode_returns()
    assert ret.dtype == torch.float32 and ret.tolist() == [1.0, 9.0]
    assert store.episode_returns("x").tolist() == [1.0, 9.0]
    both = EpisodeStore.concat([store, store.select([1])])
    assert both.ptr.tolist() == [0, 2, 5, 8] and both.data["x"].tolist() == [0, 1, 2, 3, 4, 2, 3, 4]
    buf = ReplayBuffer.from_episodes(store)
    assert buf.capacity == 5 and len(buf) == 5


def test_from_flat_splits_at_terminations_and_truncations_and_always_ends_the_last_row():
    term = torch.tensor([False, True, False, False, False, False])
    trunc = torch.tensor([False, False, False, True, False, False])
    flat = TensorDict({"x": torch.arange(6), "terminated": term, "truncated": trunc}, batch_size=[6])
    store = EpisodeStore.from_flat(flat)
    assert store.ptr.tolist() == [0, 2, 4, 6]
    assert flat["terminated"].tolist() == term.tolist()  # the input's flags are not modified
    column = TensorDict({"x": torch.arange(3), "terminated": torch.zeros(3, 1, dtype=torch.bool),
                         "truncated": torch.tensor([[False], [True], [False]])}, batch_size=[3])
    assert EpisodeStore.from_flat(column).ptr.tolist() == [0, 2, 3]  # [M, 1] flags


def test_to_batch_round_trip_and_per_episode_lengths():
    store = _store([2, 3])
    batch = store.to_batch(log_reward=torch.tensor([0.5, -1.0]))
    assert batch.batch_size == torch.Size([]) and batch["log_reward"].tolist() == [0.5, -1.0]
    back = EpisodeStore.from_batch(batch)
    assert back.ptr.tolist() == [0, 2, 5] and back.data["x"].tolist() == list(range(5))
    with pytest.raises(ValueError, match="log_reward has 3 rows for 2 episodes"):
        store.to_batch(log_reward=torch.zeros(3))


def test_select_reorders_and_repeats_episodes():
    store = _store([2, 1, 3])
    sub = store.select(torch.tensor([2, 0, 2]))
    assert sub.ptr.tolist() == [0, 3, 5, 8] and sub.data["x"].tolist() == [3, 4, 5, 0, 1, 3, 4, 5]
    assert store.select([]).num_episodes == 0
    assert math.isclose(float(sub.episode_returns()[1]), 1.0)


def test_replay_buffer_keeps_each_column_s_dtype_and_shape():
    buf = ReplayBuffer(4)
    buf.add({"obs": torch.ones(2, 3, 2), "flag": torch.tensor([True, False]), "a": torch.tensor([3, 4])})
    assert buf.data["obs"].shape == (4, 3, 2) and buf.data["obs"].dtype == torch.float32
    assert buf.data["flag"].dtype == torch.bool and buf.data["a"].dtype == torch.int64
    batch = buf.sample(8, torch.Generator().manual_seed(0))
    assert batch["flag"].dtype == torch.bool and set(batch["a"].tolist()) <= {3, 4}
    # the storage is a TensorDict [capacity]: rows can be taken from it directly (gcrl.goal_batch does)
    assert buf.data.batch_size == (4,)
    rows = buf.data[torch.tensor([1, 0])]
    assert rows.batch_size == (2,) and rows["a"].tolist() == [4, 3] and rows["flag"].tolist() == [False, True]


def test_sampling_draws_from_the_generator_given():
    buf = ReplayBuffer.from_episodes(_store([50, 50]))
    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the global RNG must not matter
        g = torch.Generator().manual_seed(7)
        draws.append((buf.sample_indices(64, g).tolist(), buf.sample(64, g)["x"].tolist(),
                      buf.sample_future(torch.zeros(64, dtype=torch.int64), 0.9, g).tolist()))
    assert draws[0] == draws[1]


def test_messages_and_boundaries_of_fresh_and_loaded_buffers():
    with pytest.raises(RuntimeError, match="^sample_future needs episode boundaries: build the buffer with "
                                           "ReplayBuffer.from_episodes$"):
        ReplayBuffer(4).sample_future(torch.zeros(1, dtype=torch.int64), 0.5)
    loaded = ReplayBuffer(4)
    loaded.load_state_dict(ReplayBuffer.from_episodes(_store([2, 2])).state_dict())
    with pytest.raises(RuntimeError, match="needs episode boundaries"):  # a checkpoint holds no boundaries
        loaded.sample_future(torch.zeros(1, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="^cannot sample from an empty ReplayBuffer$"):
        ReplayBuffer(4).sample_indices(1)
    with pytest.raises(ValueError, match="^EpisodeStore.from_episodes needs at least one episode$"):
        EpisodeStore.from_episodes([])
    with pytest.raises(ValueError, match="^EpisodeStore.concat needs at least one store$"):
        EpisodeStore.concat([])
    data = TensorDict({"x": torch.arange(3)}, batch_size=[3])
    with pytest.raises(ValueError, match=r"got \[0, 0, 0, 0, 0, 0, 0, 0\]\.\.\.$"):  # the first 8 offsets
        EpisodeStore(data, torch.zeros(10, dtype=torch.int64))
    assert EpisodeStore(data, torch.tensor([0, 3], dtype=torch.int32)).ptr.dtype == torch.int64
