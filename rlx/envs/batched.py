"""Protocols of rlx's non-gym experience sources, and the check a custom one passes.

* `BatchedEnv`: a tensorized construction env sampled by `algos/gflownet.py` (HyperGrid, the
  atom and fragment molecule envs). A batch of B states is one TensorDict [B]; the action sets
  of the B states are ragged, laid out flat as K entries with CSR offsets `action_ptr` [B + 1];
  actions are local indices into each state's set. Optional capabilities are flags, and a flag
  that is on obliges the methods listed with it.
* `PromptStream`: a sequence of tasks that hands out prompts and scores responses
  (`envs/text.py`'s continual preference stream, driven by `ContinualRun`).

`check_batched_env` runs before any work on an env given by `env.entry_point=pkg.mod:Class`
and raises one line naming the missing members.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDict

from rlx.core.errors import EnvError

POLICY_INPUTS = ("onehot", "atom_graph", "fragment_graph")


@runtime_checkable
class BatchedEnv(Protocol):
    """A batched construction env; every method works on a whole batch, on CPU tensors."""

    max_steps: int  # no trajectory has more than this many transitions (the stop included)
    action_width: int | None  # size of every state's action set when all are equal (dense fast path), else None
    # which default policy network reads the states: "onehot" (an MLP on `encode(states)` [B, obs_dim]
    # with `num_actions` logits), "atom_graph" / "fragment_graph" (an MPNN on `graph_batch(states)`)
    policy_input: str
    has_parents: bool  # `parents(states)` enumerates every parent (flow matching needs it)
    has_backward_actions: bool  # `backward_mask(states)` / `backward_action(actions)` exist (a learned P_B)
    key_metric: str  # the `evaluate_sampler` metric a run tracks as its best (`eval/l1`, `eval/top100_reward`)

    def reset(self, n: int) -> TensorDict:
        """n initial states s_0: a TensorDict [n]."""

    def action_ptr(self, states: TensorDict) -> torch.Tensor:
        """CSR offsets [B + 1] (int64, from 0 to K) of the B states' action sets."""

    def forward_mask(self, states: TensorDict) -> torch.Tensor:
        """[K] bool: the allowed actions of each set (every state allows at least one)."""

    def step(self, states: TensorDict, actions: torch.Tensor) -> TensorDict:
        """The next states [B] after local actions [B] (int64); a stop leaves a state as it is."""

    def is_stop(self, actions: torch.Tensor) -> torch.Tensor:
        """[B] bool: which local actions end the trajectory (the state is then terminal)."""

    def num_parents(self, states: TensorDict) -> torch.Tensor:
        """[B] number of states with an edge into each state (the uniform P_B is 1 / num_parents)."""

    def log_reward(self, states: TensorDict) -> torch.Tensor:
        """[B] log R(x) of terminal states."""

    def evaluate_sampler(self, learner: Any, num_samples: int) -> dict[str, float]:
        """Evaluation metrics (`eval/...`) of a learner's sampler, including `key_metric`."""


# optional members a flag obliges, and the members each policy input reads
FLAG_MEMBERS = {"has_parents": ("parents",), "has_backward_actions": ("backward_mask", "backward_action")}
INPUT_MEMBERS = {"onehot": ("encode", "obs_dim", "num_actions"), "atom_graph": ("graph_batch",),
                 "fragment_graph": ("graph_batch", "num_stem_types")}


@runtime_checkable
class PromptStream(Protocol):
    """Tasks 0..num_tasks-1 in order; prompts are token ids [N, P], responses [N, T] with a
    validity mask [N, T]; scores are [N] floats."""

    num_tasks: int

    def prompts(self, task: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n prompts [n, P] of `task`."""

    def reward(self, task: int, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N] the learned reward a learner is trained on."""

    def gold(self, task: int, prompt: torch.Tensor, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N] the hidden gold score evaluation reports."""


def _members(protocol: type) -> list[str]:
    names = [n for n in protocol.__dict__ if not n.startswith("_")]
    return [*names, *(n for n in protocol.__dict__.get("__annotations__", {}) if n not in names)]


def missing_members(env: Any, protocol: type = BatchedEnv) -> list[str]:
    """Members of `protocol` that `env` (an instance, or a class: then methods only) lacks,
    with the optional members its flags and policy input oblige."""
    is_class = isinstance(env, type)
    annotations = protocol.__dict__.get("__annotations__", {})
    missing = [n for n in _members(protocol) if not (is_class and n in annotations) and not hasattr(env, n)]
    if protocol is BatchedEnv and not is_class:
        for flag, names in FLAG_MEMBERS.items():
            if getattr(env, flag, False):
                missing += [n for n in names if not hasattr(env, n)]
        kind = getattr(env, "policy_input", None)
        if kind is not None and kind not in POLICY_INPUTS:
            missing.append(f"policy_input in {POLICY_INPUTS} (got {kind!r})")
        missing += [n for n in INPUT_MEMBERS.get(kind, ()) if not hasattr(env, n)]
    return missing


def check_batched_env(env: Any, source: str, protocol: type = BatchedEnv) -> None:
    """Raise EnvError (one line) unless `env` (instance or class) follows `protocol`."""
    missing = missing_members(env, protocol)
    if missing:
        name = env.__name__ if isinstance(env, type) else type(env).__name__
        raise EnvError(f"{source}: {name} is not a {protocol.__name__} (missing {', '.join(missing)}); "
                       f"see rlx/envs/batched.py for the members and their shapes")


__all__ = ["BatchedEnv", "PromptStream", "check_batched_env", "missing_members", "POLICY_INPUTS"]
