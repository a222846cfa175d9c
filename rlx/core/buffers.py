"""Storage and sampling, nothing else (docs/architecture.md section 3).

* `RolloutBuffer`: a fixed `[T, N]` block of on-policy experience (time-major) whose
  advantages come from `rlx.kernels.gae`.
* `ReplayBuffer`: flat circular storage of transitions, uniform sampling, and sampling of
  future rows of the same episode (goal relabelling) when episode boundaries are known.
* `EpisodeStore`: ragged episodes as one flat TensorDict of M rows plus CSR offsets `ptr`.

All batches are `TensorDict`s with the canonical keys of docs/architecture.md section 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from tensordict import TensorDict

from rlx import kernels


class RolloutBuffer:
    """`[T, N]` on-policy storage, allocated once: `allocate` (or the first `add`) makes every
    column, then rows are written one time step (all N envs) at a time, into the columns
    themselves (`columns[key][t] = ...`: no per-step TensorDict)."""

    def __init__(self, num_steps: int, num_envs: int, device: torch.device | str = "cpu"):
        self.T, self.N, self.device = num_steps, num_envs, torch.device(device)
        self.data: TensorDict | None = None
        self.columns: dict[str, torch.Tensor] = {}  # key -> its [T, N, ...] storage tensor in `data`
        self.t = 0

    def allocate(self, columns: Mapping[str, torch.Tensor]) -> None:
        """Use the given [T, N, ...] tensors (e.g. views of host arrays an env loop fills) as the
        storage of those keys, keeping the buffer's other columns."""
        self.columns.update(columns)
        self.data = TensorDict(dict(self.columns), batch_size=[self.T, self.N])

    def add(self, step: Mapping[str, torch.Tensor]) -> None:
        """`step` maps keys to [N, ...] tensors; storage is allocated on first use."""
        if self.data is None:
            # [N, ...] -> [T, N, ...]
            self.allocate({k: torch.zeros(self.T, *v.shape, dtype=v.dtype, device=self.device) for k, v in step.items()})
        if self.t >= self.T:
            raise RuntimeError(f"RolloutBuffer is full ({self.T} steps); call reset() after each update")
        for k, v in step.items():
            self.columns[k][self.t] = v  # direct tensor writes: no per-step TensorDict construction
        self.t += 1

    @property
    def full(self) -> bool:
        return self.t == self.T

    def reset(self) -> None:
        self.t = 0

    def compute_advantages(self, gamma: float, lam: float) -> TensorDict:
        """Fill `adv` and `ret` ([T, N]) from `reward`, `value`, `next_value`, `terminated`,
        `truncated`: terminated steps do not bootstrap, truncated ones bootstrap from
        `next_value` (V of the true final observation) and cut the recursion."""
        return compute_advantages(self.data, gamma, lam)


def compute_advantages(data: TensorDict, gamma: float, lam: float) -> TensorDict:
    """`RolloutBuffer.compute_advantages` on a `[T, N]` batch built whole (e.g. token rollouts)."""
    adv, ret = kernels.gae(data["reward"], data["value"], data["next_value"], data["terminated"], data["truncated"],
                           gamma, lam)
    data["adv"], data["ret"] = adv, ret
    return data


def shuffled_minibatches(data: TensorDict | Mapping[str, torch.Tensor], batch_size: int,
                         generator: torch.Generator | None = None) -> Iterator[TensorDict | dict[str, torch.Tensor]]:
    """One epoch over the rows of a flat TensorDict in random order, `batch_size` rows at a time.
    Given a plain dict of [M, ...] tensors it yields dicts, one `index_select` per key (a third of
    the cost of indexing a TensorDict at PPO's minibatch sizes)."""
    if isinstance(data, TensorDict):
        perm = torch.randperm(data.shape[0], generator=generator).to(data.device)
        for start in range(0, data.shape[0], batch_size):
            yield data[perm[start : start + batch_size]]
        return
    first = next(iter(data.values()))
    perm = torch.randperm(first.shape[0], generator=generator).to(first.device)
    for start in range(0, first.shape[0], batch_size):
        idx = perm[start : start + batch_size]
        yield {k: v.index_select(0, idx) for k, v in data.items()}


class ReplayBuffer:
    """Circular transition storage with uniform sampling.

    Loaded from an `EpisodeStore` (offline data), it also knows episode boundaries:
    `sample_future` draws, for given rows, a later row of the same episode.
    """

    def __init__(self, capacity: int, device: torch.device | str = "cpu"):
        self.capacity, self.device = int(capacity), torch.device(device)
        self.data: TensorDict | None = None
        self.size = 0
        self.pos = 0
        self.episode_end: torch.Tensor | None = None  # [capacity] index of the last row of each row's episode
        self._columns: dict[str, torch.Tensor] | None = None  # key -> storage tensor, for writes

    def __len__(self) -> int:
        return self.size

    def add(self, rows: Mapping[str, torch.Tensor]) -> None:
        """Append a batch of transitions (a TensorDict of batch size [B] or a dict of [B, ...]
        tensors), overwriting the oldest when full. Storage is allocated once, on the first add,
        and rows are written key by key into it (at most two slice copies per key: no index
        tensor and no TensorDict is built per call)."""
        if self.data is None:
            self.data = TensorDict({k: torch.zeros(self.capacity, *v.shape[1:], dtype=v.dtype, device=self.device)
                                    for k, v in rows.items()}, batch_size=[self.capacity])
        if self._columns is None:
            self._columns = dict(self.data.items())  # the storage tensors themselves
        b = next(iter(rows.values())).shape[0]
        skip = max(b - self.capacity, 0)  # more rows than capacity: only the last `capacity` survive
        pos, n = self.pos, b - skip
        head = min(n, self.capacity - pos)
        for k, column in self._columns.items():
            v = rows[k]
            column[pos : pos + head] = v[skip : skip + head]
            if head < n:  # wrap around to the start
                column[: n - head] = v[skip + head :]
        self.pos = (pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.episode_end = None  # boundaries are only tracked for whole datasets

    def state_dict(self) -> dict:
        """The filled rows (not the whole capacity) and the write position."""
        data = None if self.data is None else {k: v[: self.size].clone() for k, v in self.data.items()}
        return {"capacity": self.capacity, "size": self.size, "pos": self.pos, "data": data}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay buffer capacity {self.capacity} != the checkpoint's {state['capacity']}; "
                             f"resume with the same buffer size")
        self.data, self._columns, self.size, self.pos = None, None, 0, 0
        if state["data"] is not None:
            self.add(state["data"])
        self.size, self.pos = state["size"], state["pos"]
        self.episode_end = None

    @classmethod
    def from_episodes(cls, store: EpisodeStore, device: torch.device | str = "cpu") -> ReplayBuffer:
        buf = cls(store.num_rows, device)
        buf.data = store.data.to(buf.device)
        buf.size = store.num_rows
        seg = store.segment_ids()
        buf.episode_end = (store.ptr[1:] - 1)[seg].to(buf.device)
        return buf

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty ReplayBuffer")
        return torch.randint(self.size, (batch_size,), generator=generator).to(self.device)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        """`batch_size` uniform rows: one `index_select` per stored column (indexing the
        TensorDict itself costs twice as much at the batch sizes of RL)."""
        idx = self.sample_indices(batch_size, generator)
        return TensorDict({k: v.index_select(0, idx) for k, v in self.data.items()}, batch_size=[batch_size])

    def sample_future(self, idx: torch.Tensor, discount: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """For each row index, a row of the same episode at offset k >= 1 with
        P(k) proportional to discount^(k-1) (geometric), truncated at the episode's end.
        A row that ends its episode returns itself."""
        if self.episode_end is None:
            raise RuntimeError("sample_future needs episode boundaries: build the buffer with ReplayBuffer.from_episodes")
        end = self.episode_end[idx]
        u = torch.rand(idx.shape, generator=generator).to(self.device)
        if discount >= 1.0:  # uniform over the rest of the episode
            offset = 1 + (u * (end - idx).float()).long()
        else:  # inverse CDF of the geometric distribution on {1, 2, ...}
            offset = torch.floor(torch.log1p(-u) / math.log(discount)).long() + 1
        return torch.minimum(idx + offset, end)


class EpisodeStore:
    """Ragged episodes: a flat TensorDict `data` of M rows and int64 offsets `ptr` [E+1]."""

    def __init__(self, data: TensorDict, ptr: torch.Tensor):
        ptr = torch.as_tensor(ptr, dtype=torch.int64)
        if ptr.ndim != 1 or ptr[0] != 0 or ptr[-1] != data.shape[0] or (ptr[1:] < ptr[:-1]).any():
            raise ValueError(f"ptr must be non-decreasing offsets from 0 to {data.shape[0]} rows; got {ptr.tolist()[:8]}...")
        self.data, self.ptr = data, ptr

    @classmethod
    def from_episodes(cls, episodes: Sequence[TensorDict]) -> EpisodeStore:
        if not episodes:
            raise ValueError("EpisodeStore.from_episodes needs at least one episode")
        lengths = torch.tensor([e.shape[0] for e in episodes])
        return cls(torch.cat(list(episodes), 0), kernels.lengths_to_ptr(lengths))

    @classmethod
    def from_flat(cls, data: TensorDict) -> EpisodeStore:
        """Split a flat transition table at rows where `terminated | truncated` (the last row
        always ends an episode)."""
        done = (data["terminated"] | data["truncated"]).reshape(-1).clone()
        done[-1] = True
        ends = torch.nonzero(done).squeeze(-1) + 1
        return cls(data, torch.cat([torch.zeros(1, dtype=torch.int64), ends]))

    def to_batch(self, **per_episode: torch.Tensor) -> TensorDict:
        """The store as one learner batch: a TensorDict with no batch dims holding the rows
        `data` [M], the offsets `ptr` [E+1] and any per-episode tensors [E, ...] given by name
        (GFlowNet's `log_reward`). `EpisodeStore.from_batch` reads it back."""
        for name, value in per_episode.items():
            if value.shape[0] != self.num_episodes:
                raise ValueError(f"{name} has {value.shape[0]} rows for {self.num_episodes} episodes")
        return TensorDict({"data": self.data, "ptr": self.ptr, **per_episode}, batch_size=[])

    @classmethod
    def from_batch(cls, batch: TensorDict) -> EpisodeStore:
        """The store of a batch made by `to_batch`."""
        return cls(batch["data"], batch["ptr"])

    @classmethod
    def concat(cls, stores: Sequence[EpisodeStore]) -> EpisodeStore:
        """One store holding the episodes of `stores` in order (rows must have the same keys)."""
        if not stores:
            raise ValueError("EpisodeStore.concat needs at least one store")
        return cls(torch.cat([s.data for s in stores], 0), kernels.lengths_to_ptr(torch.cat([s.lengths for s in stores])))

    @property
    def num_episodes(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_rows(self) -> int:
        return int(self.ptr[-1])

    @property
    def lengths(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def segment_ids(self) -> torch.Tensor:
        """[M] episode index of each row."""
        return kernels.ptr_to_segment_ids(self.ptr, self.num_rows)

    def episode(self, i: int) -> TensorDict:
        return self.data[int(self.ptr[i]) : int(self.ptr[i + 1])]

    def select(self, episodes: torch.Tensor | Sequence[int]) -> EpisodeStore:
        """A new store holding exactly the given episodes, in the given order."""
        ep = torch.as_tensor(episodes, dtype=torch.int64)
        lengths = self.lengths[ep]
        new_ptr = kernels.lengths_to_ptr(lengths)
        # row r of the new store comes from old row ptr[ep[s]] + (r - new_ptr[s])
        seg = kernels.ptr_to_segment_ids(new_ptr, int(new_ptr[-1]))
        rows = self.ptr[ep][seg] + torch.arange(int(new_ptr[-1])) - new_ptr[seg]
        return EpisodeStore(self.data[rows], new_ptr)

    def episode_returns(self, key: str = "reward") -> torch.Tensor:
        return kernels.segment_sum(self.data[key].float(), self.ptr)
