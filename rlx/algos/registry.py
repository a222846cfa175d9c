"""Algorithm registry: `@register("ppo", PPOConfig, "...")` on a module's `train(ctx)`.

A new algorithm is one new file of `rlx.algos`. The CLI does not import them all: `catalog()`
reads each module's `register(...)` call and its config dataclass's fields from the source
(`ast`, nothing executed), so `--help` and a misspelt key or algorithm need no torch;
`algorithm(name)` imports only the module that registers `name`; `algorithms()` imports every
module (tests, reports). A module whose registration cannot be read statically (a computed
name, an aliased `register`) is imported by `catalog()` instead. Algorithms registered from
outside `rlx.algos` (imported before `main()`) are listed from the live registry.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
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
    """Every registered algorithm, importing every module of `rlx.algos` once."""
    global _DISCOVERED
    if not _DISCOVERED:
        for mod in _builtin_modules():
            importlib.import_module(mod)
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))


def algorithm(name: str) -> AlgoSpec:
    """The registered algorithm `name`, importing only the module that registers it."""
    if name not in _REGISTRY:
        info = catalog().get(name)
        if info is None:
            raise ConfigError(f"unknown algorithm {name!r}; choose one of {', '.join(catalog())}")
        importlib.import_module(info.module)
        if name not in _REGISTRY:
            raise RuntimeError(f"importing {info.module} did not register algorithm {name!r}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class AlgoInfo:
    """What the CLI lists and checks keys against, known without importing the algorithm."""

    name: str
    module: str  # the module whose import registers it
    description: str
    default_env: str | None
    fields: dict[str, str]  # config field -> its annotation (source text), in declaration order


def catalog() -> dict[str, AlgoInfo]:
    """Every algorithm by name: the built-ins read from source, plus every live registration."""
    static, dynamic = _scan_builtins()
    for mod in dynamic:
        importlib.import_module(mod)
    out = dict(static)
    for name, spec in _REGISTRY.items():
        out[name] = AlgoInfo(name, spec.train.__module__, spec.description, spec.default_env,
                             {f.name: str(f.type) for f in dataclasses.fields(spec.config)})
    return dict(sorted(out.items()))


def _builtin_modules() -> list[str]:
    import rlx.algos as pkg

    return [f"rlx.algos.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
            if m.name != "registry" and not m.name.startswith("_")]


@cache
def _scan_builtins() -> tuple[dict[str, AlgoInfo], tuple[str, ...]]:
    """(name -> info read from the source, modules that must be imported to be known)."""
    infos: dict[str, AlgoInfo] = {}
    dynamic: list[str] = []
    for mod in _builtin_modules():
        try:
            infos.update((i.name, i) for i in _read_registrations(mod))
        except (OSError, SyntaxError, ValueError, KeyError, TypeError):
            dynamic.append(mod)
    return infos, tuple(dynamic)


@cache
def _source(module: str) -> tuple[str, str]:
    spec = importlib.util.find_spec(module)  # imports the parent packages only
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"no source for {module}")
    return Path(spec.origin).read_text(), spec.origin


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(*_source(module))


def _read_registrations(module: str) -> list[AlgoInfo]:
    """The `register(name, Config, description, default_env=...)` calls of a module, with
    literal arguments; ValueError when there is a registration this cannot read."""
    if "register" not in _source(module)[0]:
        return []
    tree = _tree(module)
    if any(isinstance(node, ast.ImportFrom) and node.module == "rlx.algos.registry"
           and any(a.name == "register" and a.asname not in (None, "register") for a in node.names)
           for node in ast.walk(tree)):
        raise ValueError("register imported under another name")
    out = []
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and _is_register(call.func)):
            continue
        args = dict(zip(("name", "config", "description", "default_env"), call.args))
        args.update((k.arg, k.value) for k in call.keywords if k.arg)
        if not isinstance(args["config"], ast.Name):
            raise ValueError("config is not a plain name")
        default_env = ast.literal_eval(args["default_env"]) if "default_env" in args else None
        out.append(AlgoInfo(ast.literal_eval(args["name"]), module, ast.literal_eval(args["description"]),
                            default_env, _class_fields(module, args["config"].id)))
    if not out and any(isinstance(node, ast.ImportFrom) and node.module in ("rlx.algos.registry", "rlx.algos")
                       and any(a.name in ("register", "registry") for a in node.names) for node in ast.walk(tree)):
        raise ValueError("imports register but no register(...) call could be read")
    return out


def _is_register(func: ast.expr) -> bool:
    """`register(...)`, `registry.register(...)` or `rlx.algos.registry.register(...)`."""
    if isinstance(func, ast.Name):
        return func.id == "register"
    return (isinstance(func, ast.Attribute) and func.attr == "register"
            and ast.unparse(func.value) in ("registry", "rlx.algos.registry"))


def _class_fields(module: str, cls: str) -> dict[str, str]:
    """The dataclass fields of class `cls` as seen from `module` (defined there or imported
    from another rlx module), base classes' fields first, as `dataclasses.fields` orders them."""
    tree = _tree(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            fields: dict[str, str] = {}
            for base in node.bases:
                if not isinstance(base, ast.Name):
                    raise ValueError(f"base of {cls} is not a plain name")
                fields.update(_class_fields(module, base.id))
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    annotation = ast.unparse(stmt.annotation)
                    if not annotation.split("[")[0].endswith(("ClassVar", "InitVar")):
                        fields[stmt.target.id] = annotation
            return fields
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rlx."):
            for a in node.names:
                if (a.asname or a.name) == cls:
                    return _class_fields(node.module, a.name)
    raise ValueError(f"class {cls} not found from {module}")


def _preset(choice: str) -> dict[str, Any]:
    import yaml

    path = CONFIG_DIR / "algo" / f"{choice}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown algorithm or preset {choice!r}; choose one of {', '.join(catalog())} "
                          f"or a file of {CONFIG_DIR / 'algo'}")
    return yaml.safe_load(path.read_text()) or {}


def registered_name(choice: str) -> str:
    """The registered algorithm behind an `algo=` choice: itself, or the algorithm a preset
    (rlx/configs/algo/<choice>.yaml) lists in its defaults."""
    if choice in catalog():
        return choice
    for entry in _preset(choice).get("defaults", []):
        if isinstance(entry, str) and entry in catalog():
            return entry
    raise ConfigError(f"rlx/configs/algo/{choice}.yaml must list a registered algorithm in its defaults")


def preset_config(choice: str, **overrides: Any) -> Any:
    """The config dataclass of an `algo=` choice without Hydra: the registered dataclass with a
    preset's values and then `overrides` applied (how code outside the CLI uses a variant)."""
    from omegaconf import OmegaConf

    spec = algorithm(registered_name(choice))
    values = {} if choice in catalog() else {k: v for k, v in _preset(choice).items() if k != "defaults"}
    merged = OmegaConf.merge(OmegaConf.structured(spec.config), values, overrides)
    return OmegaConf.to_object(merged)
