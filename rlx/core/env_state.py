"""Snapshots of running gymnasium envs, so an off-policy run resumes exactly where it stopped
(`OffPolicyLoop` saves one per sub-env in its checkpoint)."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from rlx.core.errors import EnvError

__all__ = ["env_state", "set_env_state"]



def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, np.ndarray, np.generic)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def _layers(env: gym.Env) -> list[gym.Env]:
    """The wrapper chain from the outermost wrapper down to the unwrapped env."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def env_state(env: gym.Env) -> dict[str, Any]:
    """A snapshot of a running env for exact resumption: the plain attributes (numbers, arrays,
    flags) of every wrapper and of the env itself (TimeLimit's step count, a classic-control
    env's `state`, ...), the env's RNG state, and for MuJoCo envs the simulator's integration
    state (`mj_getState`, mjSTATE_INTEGRATION: time, qpos, qvel, act, warm start, controls).
    State held in other objects (a custom simulator) is not captured."""
    layers = _layers(env)
    base = layers[-1]
    state: dict[str, Any] = {
        "attrs": [{k: copy.deepcopy(v) for k, v in vars(w).items() if _plain(v)} for w in layers],
        "np_random": None if base._np_random is None else copy.deepcopy(base._np_random.bit_generator.state),
    }
    model, data = getattr(base, "model", None), getattr(base, "data", None)
    if data is not None and hasattr(data, "qpos"):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        sim = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, sim, spec)
        state["mujoco"] = sim
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Restore an `env_state` snapshot into an env built the same way (and reset once)."""
    layers = _layers(env)
    if len(layers) != len(state["attrs"]):
        raise EnvError(f"env snapshot has {len(state['attrs'])} wrapper layers, this env {len(layers)}; "
                       "resume with the same env config")
    for w, attrs in zip(layers, state["attrs"]):
        for k, v in attrs.items():
            setattr(w, k, copy.deepcopy(v))
    base = layers[-1]
    if state["np_random"] is not None:
        base.np_random.bit_generator.state = copy.deepcopy(state["np_random"])
    if "mujoco" in state:
        import mujoco

        mujoco.mj_setState(base.model, base.data, state["mujoco"], mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(base.model, base.data)  # derived quantities (positions of bodies, contacts)
