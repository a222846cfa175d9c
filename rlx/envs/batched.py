"""Protocols of rlx's non-gym experience sources, and the check a custom one passes.

* `BatchedEnv`: a tensorized construction env sampled by `algos/gflownet.py` (HyperGrid, the
  atom and fragment molecule envs). A batch of B states is one TensorDict [B]; the action sets
  of the B states are ragged, laid out flat as K entries with CSR offsets `action_ptr` [B + 1];
  actions are local indices into each state's set. Optional capabilities are flags, and a flag
  that is on obliges the methods listed with it.
* `PromptStream`: a sequence of tasks that hands out prompts and scores responses
  (`envs/text.py`'s continual preference stream, driven by `ContinualRun`).

`check_batched_env` runs before any work on an env given by `env.entry_point=pkg.mod:Class`
and raises one line naming the missing members, or, once the env is built, the first answer of
wrong type or shape on two initial states (`probe_batched_env`).
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
    """Raise EnvError (one line) unless `env` (instance or class) follows `protocol`; an instance
    of a `BatchedEnv` is also probed on two initial states (`probe_batched_env`)."""
    missing = missing_members(env, protocol)
    name = env.__name__ if isinstance(env, type) else type(env).__name__
    if missing:
        raise EnvError(f"{source}: {name} is not a {protocol.__name__} (missing {', '.join(missing)}); "
                       f"see rlx/envs/batched.py for the members and their shapes")
    if protocol is BatchedEnv and not isinstance(env, type):
        problem = probe_batched_env(env)
        if problem:
            raise EnvError(f"{source}: {name} breaks the BatchedEnv protocol: {problem} "
                           f"(see rlx/envs/batched.py for the members and their shapes)")


def probe_batched_env(env: Any, n: int = 2) -> str | None:
    """What is wrong with the shapes and types of `env`'s answers on `n` initial states (None: nothing):
    reset(n) a TensorDict [n], action_ptr int64 [n + 1] from 0 and non-decreasing (every set of
    `action_width` entries when that is set), forward_mask bool [K] allowing an action in every
    state, step keeping the batch, is_stop / num_parents [n], encode [n, obs_dim] for onehot input."""
    states = env.reset(n)
    if not isinstance(states, TensorDict) or tuple(states.batch_size) != (n,):
        return f"reset({n}) returned {type(states).__name__} {_shape(states)}, not a TensorDict of batch size [{n}]"
    ptr = env.action_ptr(states)
    if not isinstance(ptr, torch.Tensor) or ptr.dtype != torch.int64 or tuple(ptr.shape) != (n + 1,):
        return f"action_ptr of {n} states returned {_shape(ptr)}, not int64 [{n + 1}] CSR offsets"
    sizes = ptr[1:] - ptr[:-1]
    if int(ptr[0]) != 0 or bool((sizes < 0).any()):
        return f"action_ptr {ptr.tolist()} must start at 0 and never decrease"
    if env.action_width is not None and bool((sizes != env.action_width).any()):
        return f"action_width={env.action_width} but action_ptr gives sets of sizes {sizes.tolist()}"
    mask = env.forward_mask(states)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (int(ptr[-1]),):
        return f"forward_mask returned {_shape(mask)}, not bool [{int(ptr[-1])}] (one entry per action, K = action_ptr[-1])"
    allowed = torch.zeros(n, dtype=torch.int64).index_add_(0, torch.repeat_interleave(torch.arange(n), sizes), mask.long())
    if bool((allowed == 0).any()):
        return "forward_mask allows no action in an initial state"
    first = torch.tensor([int(torch.nonzero(mask[a:b])[0]) for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist())])
    for member, value, shape in (("step", env.step(states, first), None), ("is_stop", env.is_stop(first), (n,)),
                                 ("num_parents", env.num_parents(states), (n,))):
        if shape is None and (not isinstance(value, TensorDict) or tuple(value.batch_size) != (n,)):
            return f"step of {n} states returned {type(value).__name__} {_shape(value)}, not a TensorDict [{n}]"
        if shape is not None and (not isinstance(value, torch.Tensor) or tuple(value.shape) != shape):
            return f"{member} of {n} states returned {_shape(value)}, not a Tensor [{n}]"
    if env.policy_input == "onehot":
        x = env.encode(states)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (n, env.obs_dim) or not x.is_floating_point():
            return f"encode of {n} states returned {_shape(x)}, not a float Tensor [{n}, obs_dim={env.obs_dim}]"
    return None


def _shape(x: Any) -> str:
    if isinstance(x, TensorDict):
        return f"[{', '.join(map(str, x.batch_size))}]"
    return f"{x.dtype} [{', '.join(map(str, x.shape))}]" if isinstance(x, torch.Tensor) else type(x).__name__


__all__ = ["BatchedEnv", "PromptStream", "check_batched_env", "missing_members", "probe_batched_env", "POLICY_INPUTS"]
