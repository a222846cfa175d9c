"""Trajectory sampling over a batched env (`rlx.envs.batched.BatchedEnv`): the hot path of
GFlowNet training at small batches, shared by `rlx.algos.gflownet` and the molecule baselines
of `rlx.algos.sampler_baselines`.

`sample_trajectories(env, model, n, epsilon, generator)` rolls n trajectories in parallel; a step
is the policy on the still active states, one draw and the env step. Everything per row (P_B,
the trajectory-major order, the terminal states) is done once after the loop. For an env whose
action sets all have `env.action_width` entries and no exploration the draw is `_draw_dense`:
the same log-probabilities and the same Gumbel-max draw as `SegmentCategorical` in fewer tensor
ops, so the same trajectories for the same generator state.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict

from rlx import kernels
from rlx.core.buffers import EpisodeStore
from rlx.core.nets import SegmentCategorical

__all__ = ["sample_trajectories"]


def _policy_dist(env, model, states: TensorDict):
    """(SegmentCategorical of P_F over each state's masked action set, raw logits [K], log F(s) [B])."""
    logits, log_flow = model(states)
    dist = SegmentCategorical(logits, env.action_ptr(states), env.forward_mask(states), env.action_width)
    return dist, logits, log_flow


def _stuck(env, finite: torch.Tensor) -> RuntimeError:
    """The one-line error for the states (rows of the batch) where `finite` is False."""
    stuck = torch.nonzero(~finite).squeeze(-1)
    return RuntimeError(f"{type(env).__name__}: no allowed action in state(s) {stuck[:8].tolist()} of the batch "
                        "(empty or fully masked action set; the env's forward_mask must allow stop or a move)")


def _draw(dist: SegmentCategorical, generator: torch.Generator | None, env) -> torch.Tensor:
    """Local action index [B] of one draw per state. `segment_sample` returns -1 for a state whose
    action set is empty or fully masked; subtracting ptr would turn that into a wrong negative
    index, so such a state is an error (the env offers no legal action there), raised in one line.
    One host read per call: whether every drawn action has a finite log-probability."""
    idx = dist.sample(generator)  # [B] global rows, -1 where nothing can be drawn
    # the dense path (fixed-width action sets) has no -1: it returns some row of probability 0
    chosen = dist.logits[idx.clamp_min(0)]
    if dist.width is None:
        chosen = chosen.masked_fill(idx < 0, -math.inf)
    if not bool(torch.isfinite(chosen).all()):
        raise _stuck(env, torch.isfinite(chosen))
    return idx - dist.ptr[:-1]


def dense_log_probs(env, logits: torch.Tensor, states: TensorDict) -> torch.Tensor:
    """log P_F [B, w] of an env whose action sets all have `env.action_width` = w entries: the
    masked log-softmax row by row (-inf where not allowed; NaN on a row with no allowed action)."""
    w = env.action_width
    allowed = env.forward_mask(states).view(-1, w)
    return torch.where(allowed, logits.reshape(-1, w), -math.inf).log_softmax(-1)


def _draw_dense(env, model, states: TensorDict, generator: torch.Generator | None) -> torch.Tensor:
    """`_draw` of `_policy_dist` for an env whose action sets all have `env.action_width` entries,
    in fewer tensor ops on the sampler's hot path: the same log-probabilities and the same
    Gumbel-max draw (one float32 uniform per logit, as `SegmentCategorical.sample`), so the same
    actions. A state with no allowed action has an all -inf row, which log_softmax turns into NaN
    (`SegmentCategorical` maps it back to -inf); its best score is then NaN instead of -inf,
    and either fails the one host read, `min` of the best scores (every other score is finite:
    log P <= 0 minus a Gumbel draw of at most ~17)."""
    logits, _ = model(states)
    logp = dense_log_probs(env, logits, states)
    u = torch.rand(logp.numel(), generator=generator, device=logp.device, dtype=torch.float32)
    best, action = torch.sub(logp, u.log_().neg_().log_().view_as(logp)).max(-1)
    if not math.isfinite(best.min().item()):  # min propagates NaN
        raise _stuck(env, torch.isfinite(best))
    return action


def _take(states: TensorDict, idx: torch.Tensor) -> TensorDict:
    """states[idx] for a flat TensorDict of tensors; TensorDict's own indexing costs ~5x more
    per call, which dominates the step loop of small batches."""
    return TensorDict({k: v[idx] for k, v in states.items()}, batch_size=[idx.numel()])


def _cat(states: list[TensorDict]) -> TensorDict:
    """torch.cat of flat TensorDicts of tensors, key by key (cheaper than TensorDict's own)."""
    cols = {k: torch.cat([s[k] for s in states]) for k in states[0].keys()}
    return TensorDict(cols, batch_size=[next(iter(cols.values())).shape[0]])


def _explore(dist: SegmentCategorical, epsilon: float) -> SegmentCategorical:
    """(1 - eps) P_F + eps Uniform(allowed actions of each state), in log space."""
    logits = dist.logits
    uniform = SegmentCategorical(torch.zeros_like(logits), dist.ptr, torch.isfinite(logits), dist.width).logits
    logits = torch.logaddexp(logits + math.log1p(-epsilon), uniform + math.log(epsilon))
    return SegmentCategorical(logits, dist.ptr, None, dist.width)


def _roll(env, model, n: int, epsilon: float, generator: torch.Generator | None) -> list[tuple]:
    """The step loop of `sample_trajectories`: per step (states, next states, local action, stop,
    trajectory of each row) of the still active trajectories."""
    s, active = env.reset(n), torch.arange(n)  # s: the states of the active trajectories
    steps = []  # per step: (states, next states, local action, stop, trajectory of each row)
    dense = env.action_width is not None and epsilon == 0
    for _ in range(env.max_steps + 1):
        if dense:
            action = _draw_dense(env, model, s, generator)  # local index [b]
        else:
            dist, _, _ = _policy_dist(env, model, s)
            action = _draw(_explore(dist, epsilon) if epsilon > 0 else dist, generator, env)  # local index [b]
        nxt = env.step(s, action)
        stop = env.is_stop(action)
        steps.append((s, nxt, action, stop, active))
        keep = torch.nonzero(~stop).squeeze(-1)
        if keep.numel() == 0:
            return steps
        if keep.numel() < stop.numel():
            s, active = _take(nxt, keep), active[keep]
        else:  # nothing stopped: the next states are the active states as they are
            s = nxt
    raise RuntimeError(f"{type(env).__name__} did not stop within max_steps={env.max_steps}")


@torch.no_grad()
def sample_trajectories(env, model, n: int, epsilon: float = 0.0,
                        generator: torch.Generator | None = None) -> tuple[EpisodeStore, TensorDict, torch.Tensor]:
    """Roll out n trajectories in parallel from (1 - eps) P_F + eps Uniform(valid).

    Returns the transitions as an `EpisodeStore` (rows `obs`, `next_obs`, `action` (local index),
    `log_pb` (uniform backward policy, 0 on exit rows), `terminated` (exit), `traj`, `t`), the
    terminal states [n] and their log R(x) [n]. A step of the loop is the policy, one draw and
    the env step on the still active trajectories (two host reads: the draw's check and which
    trajectories go on; the active states are compacted only on a step where some stopped);
    everything per row (P_B, the trajectory-major order) is done once after."""
    with torch.inference_mode():  # cheaper per op than no_grad; the rows leave it as normal tensors (below)
        steps = _roll(env, model, n, epsilon, generator)
    obs, nxt = _cat([c[0] for c in steps]), _cat([c[1] for c in steps])
    action, stop, traj = (torch.cat([c[i] for c in steps]) for i in (2, 3, 4))
    t = torch.arange(len(steps)).repeat_interleave(torch.tensor([c[2].numel() for c in steps]))
    log_pb = torch.where(stop, 0.0, env.num_parents(nxt).clamp_min(1).float().log().neg_())
    order = torch.sort(traj, stable=True).indices  # trajectory-major; rows were appended step by step
    columns = {"obs": _take(obs, order), "next_obs": _take(nxt, order), "action": action[order], "log_pb": log_pb[order],
               "terminated": stop[order], "traj": traj[order], "t": t[order]}
    rows = TensorDict(columns, batch_size=[order.numel()])
    ptr = kernels.lengths_to_ptr(torch.bincount(traj, minlength=n))
    terminal = _take(columns["next_obs"], ptr[1:] - 1)  # [n] the state each trajectory stopped in
    return EpisodeStore(rows, ptr), terminal, env.log_reward(terminal)
