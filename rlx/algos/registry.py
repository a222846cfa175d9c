"""Algorithm registry: `@register("ppo", PPOConfig, "...")` on a module's `train(ctx)`.

`algorithms()` imports every module of `rlx.algos` once, so a new algorithm is one new
file. Algorithm modules keep heavy optional imports (rdkit, torch_geometric, ...) inside
functions so that listing algorithms stays fast and works without the extras.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlx.core.errors import ConfigError

# Hydra presets: rlx/configs/<group>/<name>.yaml (rlx/configs/algo/<variant>.yaml names its algorithm in `defaults`)
# the presets ship inside the package (package data), so clones, editable installs and wheels see the same files
CONFIG_DIR = Path(os.environ.get("RLX_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


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
    """Register `train(ctx)` as `algo=<name>`; `default_env` names a rlx/configs/env preset used
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


def _preset(choice: str) -> dict[str, Any]:
    import yaml

    path = CONFIG_DIR / "algo" / f"{choice}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown algorithm or preset {choice!r}; choose one of {', '.join(algorithms())} "
                          f"or a file of {CONFIG_DIR / 'algo'}")
    return yaml.safe_load(path.read_text()) or {}


def registered_name(choice: str) -> str:
    """The registered algorithm behind an `algo=` choice: itself, or the algorithm a preset
    (rlx/configs/algo/<choice>.yaml) lists in its defaults."""
    if choice in algorithms():
        return choice
    for entry in _preset(choice).get("defaults", []):
        if isinstance(entry, str) and entry in algorithms():
            return entry
    raise ConfigError(f"rlx/configs/algo/{choice}.yaml must list a registered algorithm in its defaults")


def preset_config(choice: str, **overrides: Any) -> Any:
    """The config dataclass of an `algo=` choice without Hydra: the registered dataclass with a
    preset's values and then `overrides` applied (how code outside the CLI uses a variant)."""
    from omegaconf import OmegaConf

    spec = algorithms()[registered_name(choice)]
    values = {} if choice in algorithms() else {k: v for k, v in _preset(choice).items() if k != "defaults"}
    merged = OmegaConf.merge(OmegaConf.structured(spec.config), values, overrides)
    return OmegaConf.to_object(merged)
