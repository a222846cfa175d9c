"""Learners, importable without Hydra, a run dir or an env: `from rlx.algos import PPO`.

Each algorithm module lists its public names in `__all__`; they resolve here lazily, so
importing one learner does not import every optional dependency of the others.
"""

from __future__ import annotations

import importlib
import pkgutil


def _modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry" and not m.name.startswith("_")]


def __getattr__(name: str):
    if name.startswith("__") or name == "registry" or name in _modules():
        raise AttributeError(name)  # a submodule: `from rlx.algos import ppo` imports just that one
    for mod_name in _modules():
        mod = importlib.import_module(f"{__name__}.{mod_name}")
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module 'rlx.algos' has no attribute {name!r}")
