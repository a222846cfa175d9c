"""A kinematic point-mass maze (HILP's goal-reaching testbed), vectorized in numpy.

The agent is a point at continuous (x, y) = (column, row) in cell units (cell (r, c) covers
[c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]); the action in [-1, 1]^2 moves it by at most
`SPEED` per step, sliding along walls (a move into a wall keeps only the free axis). The
layouts are D4RL's maze2d/antmaze `medium` and `large` maps (1 = wall). A stand-in for
gymnasium-robotics' MuJoCo PointMaze (see docs/hilp.md for why): same maps, no momentum.

* `PointMaze` (`rlx/PointMaze-Medium-v0`, `rlx/PointMaze-Large-v0`): a gymnasium env;
  observation = position, reward 0, `info["success"]` when within `SUCCESS_RADIUS` of the goal.
* `make_maze_dataset`: a noisy waypoint controller (BFS over the grid) that walks to random
  goal cells, a new one whenever it arrives; D4RL-format rows with `truncated` episode ends.
* `evaluate_goals`: success rate on the maze's fixed evaluation tasks (`TASKS`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["MAZES", "TASKS", "PointMaze", "maze_step", "shortest_path_table", "make_maze_dataset", "evaluate_goals"]

MAZES = {
    "medium": ["########",
               "#OO##OO#",
               "#OO#OOO#",
               "##OOO###",
               "#OO#OOO#",
               "#O#OO#O#",
               "#OOO#OO#",
               "########"],
    "large": ["############",
              "#OOOO#OOOOO#",
              "#O##O#O#O#O#",
              "#OOOOOO#OOO#",
              "#O####O###O#",
              "#OO#O#OOOOO#",
              "##O#O#O#O###",
              "#OO#OOO#OOO#",
              "############"],
}
# fixed evaluation tasks per maze: ((start row, col), (goal row, col)), far apart on purpose
TASKS = {
    "medium": [((1, 1), (6, 6)), ((6, 1), (1, 6)), ((1, 6), (5, 1)), ((4, 6), (1, 1)), ((6, 3), (2, 5))],
    "large": [((1, 1), (7, 10)), ((7, 1), (1, 10)), ((1, 10), (7, 4)), ((5, 4), (1, 6)), ((7, 8), (3, 1))],
}
SPEED = 0.2  # cells per step at |a| = 1
RADIUS = 0.1  # the point's half-width for collisions
SUCCESS_RADIUS = 0.5  # success: within half a cell of the goal
EPISODE_STEPS = {"medium": 200, "large": 300}  # evaluation horizon


def walls(maze: str) -> np.ndarray:
    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}; choose one of {', '.join(MAZES)}")
    return np.array([[ch == "#" for ch in row] for row in MAZES[maze]])


def _blocked(grid: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """[N] whether a point (with RADIUS) at pos [N, 2] touches a wall cell."""
    hit = np.zeros(len(pos), dtype=bool)
    for dx in (-RADIUS, RADIUS):
        for dy in (-RADIUS, RADIUS):
            c = np.clip(np.rint(pos[:, 0] + dx).astype(int), 0, grid.shape[1] - 1)
            r = np.clip(np.rint(pos[:, 1] + dy).astype(int), 0, grid.shape[0] - 1)
            hit |= grid[r, c]
    return hit


def maze_step(grid: np.ndarray, pos: np.ndarray, action: np.ndarray) -> np.ndarray:
    """One step for N points: pos [N, 2] + SPEED * clip(action) [N, 2], sliding along walls."""
    delta = SPEED * np.clip(action, -1.0, 1.0)
    new = pos + delta
    x_only = pos + delta * np.array([1.0, 0.0])
    y_only = pos + delta * np.array([0.0, 1.0])
    out = np.where(_blocked(grid, new)[:, None], x_only, new)
    out = np.where((_blocked(grid, new) & _blocked(grid, x_only))[:, None], y_only, out)
    stuck = _blocked(grid, new) & _blocked(grid, x_only) & _blocked(grid, y_only)
    return np.where(stuck[:, None], pos, out)


def free_cells(grid: np.ndarray) -> np.ndarray:
    return np.argwhere(~grid)  # [K, 2] (row, col)


def shortest_path_table(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BFS from every free cell: `dist[g_r, g_c, r, c]` (steps between cells, -1 if
    unreachable) and `next_cell[g_r, g_c, r, c] = (row, col)` of the neighbor one step closer to g."""
    h, w = grid.shape
    dist = -np.ones((h, w, h, w), dtype=np.int64)
    nxt = np.zeros((h, w, h, w, 2), dtype=np.int64)
    for gr, gc in free_cells(grid):
        d = dist[gr, gc]
        d[gr, gc] = 0
        nxt[gr, gc, gr, gc] = (gr, gc)
        queue = deque([(gr, gc)])
        while queue:
            r, c = queue.popleft()
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if not grid[nr, nc] and d[nr, nc] < 0:
                    d[nr, nc] = d[r, c] + 1
                    nxt[gr, gc, nr, nc] = (r, c)  # from (nr, nc) step towards the goal through (r, c)
                    queue.append((nr, nc))
    return dist, nxt


def _cell(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.rint(pos[:, 1]).astype(int), np.rint(pos[:, 0]).astype(int)


def waypoint_action(nxt: np.ndarray, pos: np.ndarray, goal_cell: np.ndarray) -> np.ndarray:
    """Unit-speed action towards the center of the next cell on the BFS path to goal_cell [N, 2]."""
    r, c = _cell(pos)
    step = nxt[goal_cell[:, 0], goal_cell[:, 1], r, c]  # [N, 2] (row, col)
    target = step[:, ::-1].astype(np.float64)  # (x, y) = (col, row)
    d = target - pos
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), SPEED)


class PointMaze(gym.Env):
    """Point mass in a maze. `options={"start": (row, col), "goal": (row, col)}` in `reset`
    (default: random free cells); observation = (x, y)."""

    metadata = {"render_modes": []}

    def __init__(self, maze: str = "medium", max_episode_steps: int | None = None):
        self.maze, self.grid = maze, walls(maze)
        self.max_steps = max_episode_steps or EPISODE_STEPS[maze]
        h, w = self.grid.shape
        self.observation_space = gym.spaces.Box(np.array([0.0, 0.0], np.float32), np.array([w - 1, h - 1], np.float32))
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.cells = free_cells(self.grid)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        pick = lambda: self.cells[self.np_random.integers(len(self.cells))]  # noqa: E731
        start = np.asarray(options.get("start", pick()), dtype=np.float64)
        self.goal = np.asarray(options.get("goal", pick()), dtype=np.float64)[::-1].copy()  # (x, y)
        self.pos = start[::-1] + self.np_random.uniform(-0.1, 0.1, 2)
        self.t = 0
        return self.pos.astype(np.float32), {"goal": self.goal.astype(np.float32)}

    def step(self, action):
        self.pos = maze_step(self.grid, self.pos[None], np.asarray(action, dtype=np.float64)[None])[0]
        self.t += 1
        success = bool(np.linalg.norm(self.pos - self.goal) < SUCCESS_RADIUS)
        info = {"success": success, "goal": self.goal.astype(np.float32)}
        return self.pos.astype(np.float32), float(success), success, self.t >= self.max_steps, info


def make_maze_dataset(maze: str, episodes: int = 200, episode_steps: int = 500, noise: float = 0.5,
                      seed: int = 0) -> TensorDict:
    """`episodes` parallel walks of `episode_steps` steps: the waypoint controller heads for a
    random goal cell (a new one on arrival) with N(0, noise) action noise, clipped to [-1, 1].
    Returns flat rows (episode-major) with `obs, action, reward (0), next_obs, terminated, truncated`."""
    rng = np.random.default_rng(seed)
    grid = walls(maze)
    _, nxt = shortest_path_table(grid)
    cells = free_cells(grid)
    pos = cells[rng.integers(len(cells), size=episodes)][:, ::-1] + rng.uniform(-0.2, 0.2, (episodes, 2))
    goal = cells[rng.integers(len(cells), size=episodes)]
    obs, act, nobs = (np.zeros((episode_steps, episodes, 2)) for _ in range(3))  # [T, N, 2] time-major
    for t in range(episode_steps):
        arrived = np.linalg.norm(pos - goal[:, ::-1], axis=1) < 0.3
        goal = np.where(arrived[:, None], cells[rng.integers(len(cells), size=episodes)], goal)
        a = np.clip(waypoint_action(nxt, pos, goal) + noise * rng.standard_normal((episodes, 2)), -1.0, 1.0)
        obs[t], act[t] = pos, a
        pos = maze_step(grid, pos, a)
        nobs[t] = pos
    m = episodes * episode_steps
    flat = lambda x: torch.as_tensor(x.transpose(1, 0, 2).reshape(m, 2), dtype=torch.float32)  # noqa: E731  [T, N, 2] -> [N*T, 2]
    truncated = torch.zeros(episodes, episode_steps, dtype=torch.bool)
    truncated[:, -1] = True
    return TensorDict({"obs": flat(obs), "action": flat(act), "reward": torch.zeros(m), "next_obs": flat(nobs),
                       "terminated": torch.zeros(m, dtype=torch.bool), "truncated": truncated.reshape(m)}, batch_size=[m])


@torch.no_grad()
def evaluate_goals(act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], maze: str, episodes_per_task: int = 2,
                   seed: int = 0, tasks: list | None = None, max_steps: int | None = None) -> dict[str, float]:
    """Success rate over the fixed tasks of `maze` (or `tasks`), `episodes_per_task` each (start
    jittered by U(-0.1, 0.1) per episode). `act(obs [N, 2], goal [N, 2]) -> action [N, 2]`; all
    episodes run as one batch; an episode succeeds once it comes within SUCCESS_RADIUS of its goal."""
    rng = np.random.default_rng(seed)
    grid = walls(maze)
    tasks = tasks or TASKS[maze]
    horizon = max_steps or EPISODE_STEPS[maze]
    starts = np.repeat(np.array([s for s, _ in tasks], dtype=np.float64)[:, ::-1], episodes_per_task, 0)
    goals = np.repeat(np.array([g for _, g in tasks], dtype=np.float64)[:, ::-1], episodes_per_task, 0)
    pos = starts + rng.uniform(-0.1, 0.1, starts.shape)
    success = np.zeros(len(pos), dtype=bool)
    steps = np.full(len(pos), horizon)
    goal_t = torch.as_tensor(goals, dtype=torch.float32)
    for t in range(horizon):
        a = act(torch.as_tensor(pos, dtype=torch.float32), goal_t).cpu().numpy().astype(np.float64)
        pos = np.where(success[:, None], pos, maze_step(grid, pos, a))
        now = ~success & (np.linalg.norm(pos - goals, axis=1) < SUCCESS_RADIUS)
        steps[now] = t + 1
        success |= now
    per_task = success.reshape(len(tasks), episodes_per_task).mean(1)
    out = {"eval/success": float(success.mean()), "eval/steps_mean": float(steps.mean())}
    out.update({f"eval/success_task{i + 1}": float(s) for i, s in enumerate(per_task)})
    return out
