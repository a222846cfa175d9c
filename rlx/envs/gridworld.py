"""A corridor maze with planted behaviour families, for trajectory attribution
(`rlx.algos.attribution`), and a tabular batch-constrained Q learner for its discrete actions.

Layout (`#` wall, `H` hazard, `M` mud, `G` goal)::

    #############
    #...........#   row 1: TOP corridor (safe)
    #..########.#
    #..########.#
    #.....H....G#   row 4: MID corridor, past the hazard (-3), shortest
    #..########.#
    #..########.#
    #.....M.....#   row 7: BOT corridor, through mud (-0.5)
    #############

Episodes start in the two-column lobby (columns 1-2). Every move costs 1, the goal pays 20
and terminates, 50 steps truncate. Observations are the cell `[row, col]` (MultiDiscrete),
actions 0 up, 1 right, 2 down, 3 left (a move into a wall stays put).

The dataset (`make_gridworld_dataset`) mixes three families: TOP, MID and BOT each walk to
their corridor row, cross it and walk up or down the right column to the goal (lobby-only
random steps up, down or left add variety; only a family's own route moves right there, so
no family enters another's corridor). From lobby row r the
route costs are TOP |r-1|+3, MID |r-4|+3, BOT |r-7|+3.5 on top of the shared horizontal
distance, so the best route is TOP for rows 1-2, MID for rows 3-5 and BOT for rows 6-7, each
by at least 0.5. A batch-constrained learner picks that route, and only the removal of that
family's trajectories takes its corridor out of the data and changes the lobby decision:
`planted_responsible(cell)` is the ground truth of attribution, known by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from rlx import kernels
from rlx.core.buffers import EpisodeStore
from rlx.core.checkpoint import Saveable

__all__ = ["GridWorld", "FAMILIES", "LAYOUT", "make_gridworld_dataset", "planted_responsible", "lobby_cells",
           "TabularQConfig", "TabularQ", "fit_tabular"]

LAYOUT = (
    "#############",
    "#...........#",
    "#..########.#",
    "#..########.#",
    "#.....H....G#",
    "#..########.#",
    "#..########.#",
    "#.....M.....#",
    "#############",
)
FAMILIES = ("top", "mid", "bot")  # family f walks along corridor row FAMILY_ROWS[f]
FAMILY_ROWS = (1, 4, 7)
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left
GOAL, HAZARD, MUD = (4, 11), -3.0, -0.5
GOAL_REWARD, STEP_COST, MAX_STEPS = 20.0, -1.0, 50
ROUTE_EXTRA = (3.0, 3.0, 3.5)  # cost beyond |r - row_f| + horizontal distance: right column or hazard, + mud


def lobby_cells() -> list[tuple[int, int]]:
    """The start cells (columns 1-2, rows 1-7): the query states of the benchmark."""
    return [(r, c) for r in range(1, 8) for c in (1, 2)]


def planted_responsible(cell: tuple[int, int]) -> int:
    """The family whose route is cheapest from a lobby cell: its removal changes the decision."""
    r, _ = cell
    costs = [abs(r - row) + extra for row, extra in zip(FAMILY_ROWS, ROUTE_EXTRA)]
    return int(np.argmin(costs))


class GridWorld(gym.Env):
    """The corridor maze (module docstring). `start=(row, col)` fixes the start cell; by default
    it is uniform over the lobby."""

    metadata = {"render_modes": []}

    def __init__(self, start: tuple[int, int] | None = None):
        self.grid = np.array([list(row) for row in LAYOUT])
        self.observation_space = gym.spaces.MultiDiscrete(list(self.grid.shape))
        self.action_space = gym.spaces.Discrete(4)
        if start is not None and tuple(start) not in lobby_cells():
            raise ValueError(f"start={start} is not a lobby cell; choose (row 1-7, col 1-2)")
        self.start, self.pos, self.t = start, (1, 1), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        cells = lobby_cells()
        self.pos = tuple(self.start) if self.start is not None else cells[int(self.np_random.integers(len(cells)))]
        self.t = 0
        return np.array(self.pos, dtype=np.int64), {}

    def step(self, action):
        dr, dc = MOVES[int(action)]
        nxt = (self.pos[0] + dr, self.pos[1] + dc)
        if self.grid[nxt] != "#":
            self.pos = nxt
        self.t += 1
        cell = self.grid[self.pos]
        reward = STEP_COST + {"H": HAZARD, "M": MUD, "G": GOAL_REWARD}.get(cell, 0.0)
        terminated = cell == "G"
        return np.array(self.pos, dtype=np.int64), reward, terminated, self.t >= MAX_STEPS and not terminated, {}


def route_action(family: int, pos: tuple[int, int]) -> int:
    """The family's route: to its corridor row in the lobby, right along any corridor, then
    along the right column to the goal row."""
    r, c = pos
    if c == 11:
        return 0 if r > GOAL[0] else 2
    if c <= 2 and r != FAMILY_ROWS[family]:
        return 0 if r > FAMILY_ROWS[family] else 2
    return 1


def make_gridworld_dataset(episodes: tuple[int, ...] = (40, 40, 40), noise: float = 0.3, seed: int = 0):
    """`episodes[f]` trajectories of family f; in the lobby each step is, with probability
    `noise`, a random move that stays in the lobby. Returns an `OfflineDataset` whose
    metadata["families"] is the planted family of every episode."""
    from rlx.envs.datasets import OfflineDataset

    if len(episodes) != len(FAMILIES) or min(episodes) < 1:
        raise ValueError(f"episodes needs one positive count per family {FAMILIES}, got {episodes}")
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise={noise} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    env = GridWorld()
    eps, labels = [], []
    for family, count in enumerate(episodes):
        for _ in range(count):
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            rows = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
            done = False
            while not done:
                pos = (int(obs[0]), int(obs[1]))
                action = route_action(family, pos)
                if pos[1] <= 2 and rng.random() < noise:  # lobby wander: up, down or left, never right
                    action = int(rng.choice([0, 2, 3]))
                nxt, reward, term, trunc, _ = env.step(action)
                for k, v in zip(rows, (obs, action, reward, nxt, term, trunc)):
                    rows[k].append(v)
                obs, done = nxt, term or trunc
            eps.append(TensorDict({
                "obs": torch.as_tensor(np.stack(rows["obs"])), "action": torch.tensor(rows["action"]),
                "reward": torch.tensor(rows["reward"], dtype=torch.float32),
                "next_obs": torch.as_tensor(np.stack(rows["next_obs"])),
                "terminated": torch.tensor(rows["terminated"]), "truncated": torch.tensor(rows["truncated"])},
                batch_size=[len(rows["action"])]))
            labels.append(family)
    meta = {"env_id": "rlx/GridWorld-v0", "families": labels, "family_names": list(FAMILIES),
            "behavior": f"route families {dict(zip(FAMILIES, episodes))}, lobby noise {noise}", "seed": seed}
    return OfflineDataset(EpisodeStore.from_episodes(eps), meta)


# ------------------------------------------------------------------------ tabular learner


@dataclass
class TabularQConfig:
    """Tabular batch-constrained Q-learning (BCQ-L, Fujimoto et al. 2019, section 4.1)."""

    gamma: float = 0.99  # discount
    lr: float = 1.0  # step size of each backup toward the batch target (1 = exact full-batch backup)
    iterations: int = 200  # full-batch backups in `fit_tabular` (>= the longest route suffices)


class TabularQ(Saveable):
    """Q over (state, action) pairs of a Discrete or MultiDiscrete observation space, backed up
    only through actions seen in the data (BCQ-L eq. 10: Q(s,a) <- r + gamma max_{a' : (s',a') in
    D} Q(s', a')), so the greedy policy never picks an action the data does not support. States
    without data act 0."""

    def __init__(self, cfg: TabularQConfig, observation_space: gym.Space, action_space: gym.Space):
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(f"TabularQ needs a Discrete action space, got {action_space}")
        if isinstance(observation_space, gym.spaces.Discrete):
            self.dims = [int(observation_space.n)]
        elif isinstance(observation_space, gym.spaces.MultiDiscrete) and observation_space.nvec.ndim == 1:
            self.dims = [int(n) for n in observation_space.nvec]
        else:
            raise ValueError(f"TabularQ needs a Discrete or 1-D MultiDiscrete observation space, got {observation_space}")
        self.cfg, self.n_actions = cfg, int(action_space.n)
        n_states = int(np.prod(self.dims))
        self.q = torch.zeros(n_states, self.n_actions)
        self.seen = torch.zeros(n_states, self.n_actions, dtype=torch.bool)

    def state_index(self, obs: torch.Tensor) -> torch.Tensor:
        obs = torch.as_tensor(obs).long().reshape(-1, len(self.dims))  # [B, n_dims] -> flat index [B]
        idx = torch.zeros(obs.shape[0], dtype=torch.long)
        for d, n in enumerate(self.dims):
            idx = idx * n + obs[:, d]
        return idx

    def supported_q(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.where(self.seen[idx], self.q[idx], torch.finfo(torch.float32).min)  # [B, A]

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """max over supported actions, 0 where a state has no data: [B]."""
        idx = self.state_index(obs)
        return torch.where(self.seen[idx].any(-1), self.supported_q(idx).max(-1).values, 0.0)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> TensorDict:
        del deterministic  # the greedy policy over supported actions is deterministic either way
        action = self.supported_q(self.state_index(obs)).argmax(-1)
        return TensorDict({"action": action}, batch_size=[action.shape[0]])

    def update(self, batch: TensorDict) -> dict[str, float]:
        s = self.state_index(batch["obs"])
        a = batch["action"].long().reshape(-1)
        self.seen[s, a] = True
        bootstrap = 1.0 - batch["terminated"].float().reshape(-1)  # truncated rows bootstrap
        target = batch["reward"].float().reshape(-1) + self.cfg.gamma * bootstrap * self.value(batch["next_obs"])
        pair = s * self.n_actions + a
        size = self.q.numel()
        total = kernels.scatter_add(target, pair, size)  # mean target per visited (s, a)
        count = kernels.scatter_add(torch.ones_like(target), pair, size)
        hit = count > 0
        flat = self.q.view(-1)
        new = total[hit] / count[hit]
        td = (new - flat[hit]).abs().max()
        flat[hit] = flat[hit] + self.cfg.lr * (new - flat[hit])
        return {"loss/td_max": float(td), "train/q_mean": float(flat[hit].mean())}

    def state_dict(self) -> dict:
        return {"q": self.q.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.q.copy_(state["q"])
        self.seen.copy_(state["seen"])


def fit_tabular(learner: TabularQ, store: EpisodeStore, iterations: int | None = None) -> dict[str, float]:
    """Full-batch backups over every transition of `store` (value iteration on the data's MDP)."""
    info: dict[str, float] = {}
    for _ in range(iterations or learner.cfg.iterations):
        info = learner.update(store.data)
        if info["loss/td_max"] < 1e-6:
            break
    return info
