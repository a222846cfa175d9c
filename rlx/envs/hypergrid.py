"""HyperGrid (Bengio et al. 2021, "Flow Network based Generative Models", section 4.1).

States are points x in {0, ..., H-1}^D; the start is the origin. A forward action
increments one coordinate (if it stays inside the grid) or stops, so the terminal object
is the current point. The reward is

    R(x) = R0 + R1 * prod_d 1[0.25 < |x_d / (H-1) - 0.5|]
              + R2 * prod_d 1[0.3 < |x_d / (H-1) - 0.5| < 0.4]

with 2^D high-reward modes near the corners. The env is batched and tensorized: a batch
of states is a TensorDict `{"pos": [B, D] int64}`, every method works on the whole batch.
Action layout per state (a fixed-size "segment" of D + 1 entries): index 0 = stop,
index 1 + d = increment coordinate d. The state space (H^D points) is small enough to
enumerate, which gives the exact target distribution R(x)/Z and the exact terminal
distribution of a learned forward policy (`terminal_distribution`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict

from rlx.core.checkpoint import Saveable


class HyperGrid(Saveable):
    """Batched HyperGrid with D dimensions of side H (see the module docstring); a
    `rlx.envs.batched.BatchedEnv` with every optional capability."""

    policy_input = "onehot"  # an MLP on encode(states)
    has_parents = True  # parents() for flow matching
    has_backward_actions = True  # backward_mask / backward_action for a learned P_B
    key_metric = "eval/l1"  # exact distance to R(x)/Z, by enumeration

    def __init__(self, ndim: int = 4, height: int = 8, R0: float = 0.1, R1: float = 0.5, R2: float = 2.0):
        if ndim < 1 or height < 2:
            raise ValueError(f"HyperGrid needs ndim >= 1 and height >= 2, got ndim={ndim}, height={height}")
        if R0 <= 0 or R1 < 0 or R2 < 0:
            raise ValueError(f"HyperGrid rewards need R0 > 0 and R1, R2 >= 0, got R0={R0}, R1={R1}, R2={R2}")
        if height ** ndim > 2**24:
            raise ValueError(f"HyperGrid with {height}^{ndim} states is too large to enumerate; use fewer dims")
        self.ndim, self.height = ndim, height
        self.R0, self.R1, self.R2 = R0, R1, R2
        self.num_actions = ndim + 1  # stop + one increment per dimension
        self.max_steps = ndim * (height - 1) + 1  # moves to the far corner, then stop
        self.obs_dim = ndim * height  # one-hot encoding per coordinate
        self.action_width = self.num_actions  # every state has the same action set size
        self._offsets = torch.arange(ndim) * height  # [D] first one-hot column of each coordinate
        self._moves = torch.arange(1, ndim + 1)  # [D] the action incrementing each coordinate

    # ---------------------------------------------------------------- states
    def reset(self, n: int) -> TensorDict:
        return TensorDict({"pos": torch.zeros(n, self.ndim, dtype=torch.int64)}, batch_size=[n])

    def encode(self, states: TensorDict) -> torch.Tensor:
        """One-hot features [B, D * H] for the policy network (coordinate d's one-hot in columns
        d*H .. d*H + H - 1)."""
        pos = states["pos"]
        return torch.zeros(pos.shape[0], self.obs_dim, dtype=torch.float32).scatter_(1, pos + self._offsets, 1.0)

    def action_ptr(self, states: TensorDict) -> torch.Tensor:
        """CSR offsets [B + 1] of the per-state action segments (all of size D + 1)."""
        return torch.arange(0, (states.shape[0] + 1) * self.num_actions, self.num_actions, dtype=torch.int64)

    def forward_mask(self, states: TensorDict) -> torch.Tensor:
        """[B * (D + 1)] bool: stop is always allowed, increments only inside the grid."""
        pos = states["pos"]
        mask = torch.ones(pos.shape[0], self.num_actions, dtype=torch.bool)
        torch.lt(pos, self.height - 1, out=mask[:, 1:])
        return mask.view(-1)  # [B, D+1] -> [B*(D+1)]

    def step(self, states: TensorDict, actions: torch.Tensor) -> TensorDict:
        """Apply local actions [B] (0 = stop leaves the state as it is)."""
        pos = states["pos"] + (actions[:, None] == self._moves)  # [B, D]; stop adds nothing
        if pos.numel() and pos.max().item() >= self.height:  # one op and one host read per step
            raise ValueError("HyperGrid.step got an increment that leaves the grid; sample with forward_mask")
        return TensorDict({"pos": pos}, batch_size=states.batch_size)

    def is_stop(self, actions: torch.Tensor) -> torch.Tensor:
        return actions == 0

    # ---------------------------------------------------------------- backward
    def num_parents(self, states: TensorDict) -> torch.Tensor:
        """[B] number of states with an edge into each state (coordinates that can be decremented)."""
        return (states["pos"] > 0).sum(1)

    def backward_mask(self, states: TensorDict) -> torch.Tensor:
        """[B, D] bool: backward action d (decrement coordinate d) is allowed where x_d > 0."""
        return states["pos"] > 0

    def backward_action(self, actions: torch.Tensor) -> torch.Tensor:
        """The backward action undoing forward move `actions` (>= 1): decrement that coordinate."""
        return actions - 1

    def parents(self, states: TensorDict) -> tuple[TensorDict, torch.Tensor, torch.Tensor]:
        """All D candidate parents of each state: (parent states [B * D], the forward action
        from parent to state [B * D], valid [B * D] bool)."""
        pos = states["pos"]
        B, D = pos.shape
        eye = torch.eye(D, dtype=torch.int64)
        parent = (pos[:, None, :] - eye[None]).reshape(B * D, D)  # [B, D, D] -> [B*D, D]
        valid = (pos > 0).reshape(B * D)
        action = torch.arange(1, D + 1).repeat(B)
        return TensorDict({"pos": parent.clamp_min(0)}, batch_size=[B * D]), action, valid

    # ---------------------------------------------------------------- reward
    def log_reward(self, states: TensorDict) -> torch.Tensor:
        ax = (states["pos"].float() / (self.height - 1) - 0.5).abs()  # [B, D]
        r = self.R0 + self.R1 * (ax > 0.25).all(1).float() + self.R2 * ((ax > 0.3) & (ax < 0.4)).all(1).float()
        return r.log()

    # ---------------------------------------------------------------- enumeration
    def all_states(self) -> TensorDict:
        """Every grid point, index = sum_d x_d H^d (so x_0 varies fastest)."""
        idx = torch.arange(self.height ** self.ndim)
        pos = torch.stack([(idx // self.height ** d) % self.height for d in range(self.ndim)], 1)
        return TensorDict({"pos": pos}, batch_size=[idx.numel()])

    def state_index(self, states: TensorDict) -> torch.Tensor:
        powers = self.height ** torch.arange(self.ndim)
        return (states["pos"] * powers).sum(1)

    def target_distribution(self) -> torch.Tensor:
        """[H^D] R(x) / Z over all points."""
        return torch.softmax(self.log_reward(self.all_states()), 0)

    def log_partition(self) -> float:
        return float(torch.logsumexp(self.log_reward(self.all_states()), 0))

    @torch.no_grad()
    def terminal_distribution(self, log_pf: Callable[[TensorDict], torch.Tensor]) -> torch.Tensor:
        """Exact P_T(x) [H^D] of a forward policy `log_pf(states) -> [B, D + 1]` log-probs, by
        dynamic programming over the levels sum_d x_d (every edge goes up one level):
        P(reach s) = sum_d P(reach s - e_d) P_F(d | s - e_d), P_T(x) = P(reach x) P_F(stop | x)."""
        states = self.all_states()
        pos = states["pos"]
        pf = log_pf(states).exp()  # [S, D+1]
        reach = torch.zeros(pos.shape[0], dtype=pf.dtype)
        level = pos.sum(1)
        reach[level == 0] = 1.0
        strides = self.height ** torch.arange(self.ndim)
        for ell in range(1, int(level.max()) + 1):
            rows = torch.nonzero(level == ell).squeeze(-1)
            total = torch.zeros(rows.numel(), dtype=pf.dtype)
            for d in range(self.ndim):
                ok = pos[rows, d] > 0
                parent = rows[ok] - strides[d]
                total[ok] += reach[parent] * pf[parent, d + 1]
            reach[rows] = total
        return reach * pf[:, 0]

    def empirical_distribution(self, terminal: TensorDict) -> torch.Tensor:
        """[H^D] histogram of sampled terminal states, normalized."""
        counts = torch.bincount(self.state_index(terminal), minlength=self.height ** self.ndim).float()
        return counts / counts.sum().clamp_min(1.0)

    def evaluate_sampler(self, learner, num_samples: int) -> dict[str, float]:
        """`eval/l1` (exact, by enumerating the learned forward policy), `eval/l1_empirical`
        (from `num_samples` fresh terminal states) and `eval/log_z_error` (|log Z - log sum R|)."""
        target = self.target_distribution()
        with torch.no_grad():
            exact = self.terminal_distribution(lambda s: learner.policy_log_probs(s))
            _, terminal, _ = learner.sample(num_samples, epsilon=0.0)
        return {"eval/l1": l1_distance(exact, target),
                "eval/l1_empirical": l1_distance(self.empirical_distribution(terminal), target),
                "eval/log_z_error": log_z_error(learner.estimated_log_z(), self)}


def l1_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 * sum |p - q| (total variation); torchgfn reports the mean |p - q| instead, which is
    this value * 2 / |X|; scripts that compare with torchgfn say which one they print."""
    return float(0.5 * (p - q).abs().sum())


def log_z_error(log_z: float, env: HyperGrid) -> float:
    return abs(log_z - env.log_partition())


__all__ = ["HyperGrid", "l1_distance", "log_z_error"]
