import torch
from tensordict import TensorDict

from rlx.core.buffers import EpisodeStore, ReplayBuffer, RolloutBuffer


def _episodes(lengths):
    eps, start = [], 0
    for n in lengths:
        obs = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(-1)
        term = torch.zeros(n, dtype=torch.bool)
        term[-1] = True
        eps.append(TensorDict({"obs": obs, "reward": torch.ones(n), "terminated": term,
                               "truncated": torch.zeros(n, dtype=torch.bool)}, batch_size=[n]))
        start += n
    return eps


def test_episode_store_offsets_and_select():
    store = EpisodeStore.from_episodes(_episodes([3, 1, 4]))
    assert store.ptr.tolist() == [0, 3, 4, 8]
    assert store.segment_ids().tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    sub = store.select([2, 0])
    assert sub.ptr.tolist() == [0, 4, 7]
    assert sub.data["obs"].squeeze(-1).tolist() == [4, 5, 6, 7, 0, 1, 2]
    assert store.episode_returns().tolist() == [3.0, 1.0, 4.0]


def test_episode_store_from_flat_splits_on_done():
    flat = torch.cat([e for e in _episodes([2, 3])])
    store = EpisodeStore.from_flat(flat)
    assert store.ptr.tolist() == [0, 2, 5]


def test_episode_store_rejects_bad_ptr():
    data = _episodes([3])[0]
    try:
        EpisodeStore(data, torch.tensor([0, 2]))
    except ValueError as e:
        assert "ptr" in str(e)
    else:
        raise AssertionError("bad ptr accepted")


def test_replay_buffer_circular_overwrite():
    buf = ReplayBuffer(4)
    buf.add(TensorDict({"x": torch.arange(3.0)}, batch_size=[3]))
    buf.add(TensorDict({"x": torch.arange(3.0, 6.0)}, batch_size=[3]))
    assert len(buf) == 4
    assert sorted(buf.data["x"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert set(buf.sample(64, torch.Generator().manual_seed(0))["x"].tolist()) <= {2.0, 3.0, 4.0, 5.0}


def test_sample_future_stays_in_episode():
    store = EpisodeStore.from_episodes(_episodes([5, 1, 7, 2]))
    buf = ReplayBuffer.from_episodes(store)
    gen = torch.Generator().manual_seed(0)
    idx = buf.sample_indices(2000, gen)
    seg = store.segment_ids()
    for discount in (0.5, 0.99, 1.0):
        fut = buf.sample_future(idx, discount, gen)
        assert (seg[fut] == seg[idx]).all()
        assert (fut >= idx).all()
        single = store.lengths[seg[idx]] == 1
        assert (fut[~single & (idx < buf.episode_end[idx])] > idx[~single & (idx < buf.episode_end[idx])]).all()


def test_rollout_buffer_time_major_and_gae_bootstrap():
    T, N = 3, 2
    buf = RolloutBuffer(T, N)
    for t in range(T):
        buf.add({"reward": torch.ones(N), "value": torch.zeros(N), "next_value": torch.full((N,), 10.0),
                 "terminated": torch.tensor([t == 1, False]), "truncated": torch.tensor([False, t == 1])})
    assert buf.full and buf.data.batch_size == torch.Size([T, N])
    d = buf.compute_advantages(gamma=0.5, lam=1.0)
    # env 0 terminates at t=1: no bootstrap there; env 1 is truncated at t=1: bootstraps from next_value
    assert torch.isclose(d["adv"][1, 0], torch.tensor(1.0))
    assert torch.isclose(d["adv"][1, 1], torch.tensor(1.0 + 0.5 * 10.0))
    assert torch.isclose(d["ret"], d["adv"] + d["value"]).all()


def test_replay_buffer_dict_rows_wrap_and_state_round_trip():
    buf = ReplayBuffer(5)
    buf.add({"x": torch.arange(3.0), "d": torch.tensor([True, False, True])})
    buf.add({"x": torch.arange(3.0, 7.0), "d": torch.zeros(4, dtype=torch.bool)})  # wraps: rows 5, 6 overwrite 0, 1
    assert buf.data["x"].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0] and buf.pos == 2 and len(buf) == 5
    buf.add({"x": torch.arange(10.0, 17.0), "d": torch.zeros(7, dtype=torch.bool)})  # more rows than capacity
    assert sorted(buf.data["x"].tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0] and buf.data["x"][buf.pos - 1] == 16.0
    state = buf.state_dict()
    other = ReplayBuffer(5)
    other.load_state_dict(state)
    assert torch.equal(other.data["x"], buf.data["x"]) and (other.pos, other.size) == (buf.pos, buf.size)
    other.add({"x": torch.tensor([99.0]), "d": torch.tensor([True])})
    buf.add({"x": torch.tensor([99.0]), "d": torch.tensor([True])})
    assert torch.equal(other.data["x"], buf.data["x"])
    half = ReplayBuffer(8)
    half.add({"x": torch.arange(3.0), "d": torch.zeros(3, dtype=torch.bool)})
    assert half.state_dict()["data"]["x"].shape == (3,)  # only the filled rows
