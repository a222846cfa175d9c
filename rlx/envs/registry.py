"""Where environments come from: a gymnasium id, an import path `pkg.mod:Class`, or a callable.

Vector envs always use gymnasium's SAME_STEP autoreset: the observation returned on a
done step is the first one of the next episode, and the true final observation is in
`info["final_obs"]` (docs/architecture.md section 2). A custom env is checked once with gymnasium's
env checker; a failure is one line naming the env and the broken rule.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rlx.core.errors import EnvError
from rlx.core.ranges import count, one_of

EnvSpec = str | Callable[..., gym.Env]


@dataclass
class EnvConfig:
    """Which environment to train and evaluate in."""

    name: str = "CartPole-v1"  # short name used in the run directory (runs/<algo>/<name>/...)
    id: str | None = "CartPole-v1"  # a registered gymnasium id (e.g. HalfCheetah-v5, rlx/HyperGrid-v0)
    entry_point: str | None = None  # "pkg.module:Class" or "pkg.module:factory"; overrides id
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the env constructor / gym.make
    num_envs: int = count(8)  # parallel envs for on-policy collection
    vectorization: str = one_of("sync", ("sync", "async"))  # sync (one process) | async (one subprocess per env)
    max_episode_steps: int | None = count(None)  # time limit override (None: the env's registered limit)
    check: bool = True  # run gymnasium's env checker once on custom envs (entry_point / callable)
    dataset: str | None = None  # offline data: a dataset name or path (see rlx.envs.datasets)
    prompts: Any = None  # env=prompts (algo=rlhf/cppo): a .jsonl/.csv/.parquet file of prompts, or a list (one task each)
    prompt_key: str = "prompt"  # env=prompts: the column (JSON key) holding the prompt text


def import_object(path: str) -> Any:
    """Import `pkg.mod:attr` (or `pkg.mod.attr`)."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise EnvError(f"cannot import {path!r}: write it as 'package.module:Name'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise EnvError(f"cannot import module {module!r} from {path!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EnvError(f"module {module!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj


_CHECKED: set[str] = set()


def env_label(spec: EnvSpec | EnvConfig) -> str:
    if isinstance(spec, EnvConfig):
        return spec.entry_point or spec.id or spec.name
    return spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))


def _factory(spec: EnvSpec | EnvConfig, **overrides) -> tuple[Callable[[], gym.Env], bool]:
    """A zero-argument env constructor and whether the env is custom (needs checking)."""
    if isinstance(spec, EnvConfig):
        kwargs = {**spec.kwargs, **overrides}
        if spec.max_episode_steps is not None:
            kwargs["max_episode_steps"] = spec.max_episode_steps
        target: EnvSpec | None = spec.entry_point or spec.id
        if target is None:
            raise EnvError("env config names neither env.id nor env.entry_point; set one of them")
        if spec.entry_point:
            return _factory(import_object(spec.entry_point), **kwargs)[0], True
        return _factory(target, **kwargs)
    if callable(spec):
        limit = overrides.pop("max_episode_steps", None)

        def build() -> gym.Env:
            env = _construct(spec, overrides)
            if not isinstance(env, gym.Env):
                raise EnvError(f"{env_label(spec)} returned {type(env).__name__}, not a gymnasium.Env")
            return gym.wrappers.TimeLimit(env, limit) if limit else env

        return build, True
    if ":" in spec and spec.split(":", 1)[0] not in gym.registry and "/" not in spec.split(":", 1)[0]:
        return _factory(import_object(spec), **overrides)[0], True
    if spec not in gym.registry:
        if spec.startswith("rlx/"):
            import rlx.envs  # noqa: F401  registers rlx's own envs
        if spec not in gym.registry:
            close = difflib.get_close_matches(spec, list(gym.registry), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise EnvError(f"unknown gymnasium env id {spec!r}{hint}; use a registered id or env.entry_point=pkg.mod:Class")
    return (lambda: _construct(gym.make, overrides, spec)), False


def construct(entry_point: str, kwargs: dict[str, Any]) -> Any:
    """`pkg.mod:Class(**kwargs)` for envs that are not gymnasium.Envs (batched GFlowNet envs);
    a constructor refusing its kwargs or their values is one EnvError line."""
    try:
        return _construct(import_object(entry_point), kwargs)
    except ValueError as e:
        if isinstance(e, EnvError):
            raise
        raise EnvError(f"env {entry_point} refused env.kwargs {kwargs}: {' '.join(str(e).split())}") from None


def _construct(fn: Callable[..., Any], kwargs: dict[str, Any], *args: Any) -> Any:
    """`fn(*args, **kwargs)`; a constructor refusing env.kwargs is one EnvError line."""
    try:
        return fn(*args, **kwargs)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        label = args[0] if args else env_label(fn)
        raise EnvError(f"env {label} does not accept env.kwargs {sorted(kwargs)}: {' '.join(str(e).split())}") from None


def check_env(env_fn: Callable[[], gym.Env], label: str) -> None:
    """gymnasium's env checker, once per label; failures become one EnvError line."""
    if label in _CHECKED:
        return
    from gymnasium.utils.env_checker import check_env as gym_check

    try:
        env = env_fn()
    except EnvError:
        raise
    except Exception as e:
        raise EnvError(f"env {label} could not be constructed: {type(e).__name__}: {' '.join(str(e).split())}") from None
    try:
        import sys
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check(env.unwrapped, skip_render_check=True)
        for msg in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
            print(f"rlx: warning: env {label}: {msg}", file=sys.stderr)  # the checker's warnings, one line each
        obs, _ = env.reset(seed=0)
        if isinstance(obs, np.ndarray) and np.issubdtype(obs.dtype, np.floating) and not np.isfinite(obs).all():
            raise AssertionError("reset() returned a non-finite (NaN/inf) observation")
    except Exception as e:  # the checker raises AssertionError and others; report them alike
        msg = " ".join(str(e).split()) or type(e).__name__
        raise EnvError(f"env {label} failed gymnasium's env checker: {msg}") from None
    finally:
        env.close()
    _CHECKED.add(label)


def make_env(spec: EnvSpec | EnvConfig, check: bool | None = None, **overrides) -> gym.Env:
    """One env from an id, an import path or a callable (custom envs are checked once)."""
    fn, custom = _factory(spec, **overrides)
    do_check = custom if check is None else check
    if isinstance(spec, EnvConfig):
        do_check = do_check and spec.check
    if do_check:
        check_env(fn, env_label(spec))
    return fn()


def make_vec_env(spec: EnvSpec | EnvConfig, num_envs: int | None = None, vectorization: str | None = None,
                 check: bool | None = None, **overrides) -> gym.vector.VectorEnv:
    """N copies in a sync or async vector env with SAME_STEP autoreset."""
    if isinstance(spec, EnvConfig):
        num_envs = spec.num_envs if num_envs is None else num_envs
        vectorization = spec.vectorization if vectorization is None else vectorization
    num_envs, vectorization = num_envs or 1, vectorization or "sync"
    fn, custom = _factory(spec, **overrides)
    do_check = (custom if check is None else check) and (spec.check if isinstance(spec, EnvConfig) else True)
    if do_check:
        check_env(fn, env_label(spec))
    kwargs = {"autoreset_mode": AutoresetMode.SAME_STEP}
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv([fn] * num_envs, **kwargs)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv([fn] * num_envs, **kwargs)
    raise EnvError(f"unknown env.vectorization={vectorization!r}; choose sync or async")

