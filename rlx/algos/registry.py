"""Algorithm registry: `@register("ppo", PPOConfig, "...")` on a module's `train(ctx)`.

`algorithms()` imports every module of `rlx.algos` once, so a new algorithm is one new
file. Algorithm modules keep heavy optional imports (rdkit, torch_geometric, ...) inside
functions so that listing algorithms stays fast and works without the extras.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    config: type  # the dataclass whose fields are `algo.<field>` on the command line
    train: Callable[[Any], dict[str, Any]]  # train(ctx: rlx.train.RunContext) -> final metrics
    description: str
    default_env: str | None = None  # env preset used when the command line names none
    # check(cfg: rlx.train.RunConfig): cheap validation run before the run directory is made;
    # raises ValueError (or rlx.core.errors.ConfigError) with a one-line message
    check: Callable[[Any], None] | None = None


_REGISTRY: dict[str, AlgoSpec] = {}
_DISCOVERED = False


def register(name: str, config: type, description: str, default_env: str | None = None,
             check: Callable[[Any], None] | None = None):
    """Register `train(ctx)` as `algo=<name>`; `default_env` names a configs/env preset used
    when the command line gives no `env=` (e.g. the built-in task of a sampler algorithm);
    `check(cfg)` validates the whole run config (env kwargs, dataset name, ...) before anything
    is written, so a bad setting is one error line and leaves no empty run directory."""

    def decorator(fn):
        if name in _REGISTRY and _REGISTRY[name].train is not fn:
            raise ValueError(f"algorithm {name!r} is registered twice")
        _REGISTRY[name] = AlgoSpec(name, config, fn, description, default_env, check)
        return fn

    return decorator


def algorithms() -> dict[str, AlgoSpec]:
    global _DISCOVERED
    if not _DISCOVERED:
        import rlx.algos as pkg

        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name != "registry" and not mod.name.startswith("_"):
                importlib.import_module(f"rlx.algos.{mod.name}")
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))
