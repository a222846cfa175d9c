"""Checkpoints: written atomically (temp file + fsync + rename), so a crash or Ctrl-C
mid-write never leaves a truncated file where a good one was.

Every `.pt` file rlx reads (checkpoints, cached reward models, base models, classifiers) is
loaded with `torch.load(weights_only=True)`: tensors and plain Python types only, so a
crafted file cannot run code. Such a file is refused with one `UnsafeFileError` line."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlx.core.errors import UnsafeFileError


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Call `write_fn(file_object)` on a temp file beside `path`, then rename it over `path`.
    The file gets the permissions `open(path, "w")` would give it (0666 minus the umask, e.g.
    0644), not the 0600 of `tempfile.mkstemp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a file holding anything else (code, arbitrary
    objects) or not a torch file at all is refused with one line naming it."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, KeyError) as e:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed| Please|$)", str(e), re.M)
        why = found.group(1).strip() if found else " ".join(str(e).split())[:200] or type(e).__name__
        raise UnsafeFileError(f"refusing to load {path}: it is not a plain-tensor torch file ({why}); "
                              "rlx files hold tensors and plain types only, so delete or regenerate it") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return safe_load(path, map_location)


def to_plain(obj: Any) -> Any:
    """Numpy arrays and scalars inside nested dicts/lists/tuples as tagged tensors, so a state
    with numpy in it (env snapshots, episode counters) saves under `weights_only=True`;
    `from_plain` restores them with their dtypes."""
    if isinstance(obj, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return {"__numpy_scalar__": torch.from_numpy(np.asarray(obj).copy())}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """The inverse of `to_plain`."""
    if isinstance(obj, dict):
        if obj.keys() == {"__numpy__"}:
            return obj["__numpy__"].numpy().copy()
        if obj.keys() == {"__numpy_scalar__"}:
            return obj["__numpy_scalar__"].numpy()[()]
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def latest_checkpoint(run_dir: str | os.PathLike) -> Path:
    """`<run_dir>/checkpoints/last.pt`, with a clear error when the run has none."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {path} does not exist (is {run_dir} an rlx run directory that saved a checkpoint?)"
        )
    return path


# ---------------------------------------------------------------------------- learners that save themselves

LEARNER_FORMAT = "rlx-learner/1"


class Saveable:
    """`learner.save(path)` / `Class.load(path)` for learners and the envs and models they are
    built from. Creating an instance records its constructor arguments; `save` writes them as
    plain data (dataclass configs field by field, gymnasium spaces as bounds and sizes, nested
    Saveable objects as their own arguments, shared objects once) next to `state_dict()`, so
    `load` rebuilds the object and loads its state with nothing but the file. The file loads
    with `torch.load(weights_only=True)`; classes are resolved only from `rlx` modules or modules
    already imported, and only dataclasses and Saveable classes are constructed."""

    def __new__(cls, *args: Any, **kwargs: Any):
        self = super().__new__(cls)
        object.__setattr__(self, "_rlx_init", (args, kwargs))  # past nn.Module.__setattr__
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the constructor arguments and `state_dict()` to `path` (atomically)."""
        init = encode_init(self)
        state = to_plain(self.state_dict()) if hasattr(self, "state_dict") else None
        return save_checkpoint(path, {"format": LEARNER_FORMAT, "object": init, "state": state})

    def init_arguments(self) -> dict[str, Any]:
        """The constructor's arguments by parameter name (what `save` records)."""
        import inspect

        args, kwargs = self._rlx_init
        return dict(inspect.signature(type(self)).bind_partial(*args, **kwargs).arguments)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None):
        """The object `save` wrote, rebuilt and with its state loaded; `device` overrides the
        constructor's `device=` argument where it has one."""
        file = load_checkpoint(path)
        if not isinstance(file, dict) or file.get("format") != LEARNER_FORMAT:
            raise UnsafeFileError(f"{path} is not a file written by learner.save() (no {LEARNER_FORMAT!r} header); "
                                  "a run's checkpoints/last.pt loads with rlx.load(run_dir)")
        obj = decode_init(file["object"], device=device, source=path)
        if not isinstance(obj, cls):
            raise TypeError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}; "
                            f"load it with {type(obj).__name__}.load or rlx.core.checkpoint.Saveable.load")
        if file["state"] is not None:
            obj.load_state_dict(from_plain(file["state"]))
        return obj


def learner_init(learner: Any) -> dict[str, Any] | None:
    """`encode_init(learner)` for a run's checkpoint (so `rlx.load(run_dir)` rebuilds any learner),
    or None for a learner that is not Saveable or was built from something that is not plain data
    (e.g. a Hugging Face model object): such a run still loads from its config.yaml where it can."""
    if not isinstance(learner, Saveable):
        return None
    try:
        return encode_init(learner)
    except TypeError:
        return None


_REBUILDERS: dict[str, Callable[..., Any]] = {}


def rebuilder(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register `fn` (a function of an rlx module) as one a learner file may call to rebuild a
    constructor argument that is not plain data, e.g. a user's policy loaded from its spec: an
    object with `obj.rlx_rebuild = ("module:function", args)` is saved as that call, and loading
    calls it again (the file names the function; only registered ones run, with plain arguments)."""
    _REBUILDERS[_qualname(fn)] = fn
    return fn


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def encode_init(obj: Saveable) -> dict[str, Any]:
    """A Saveable object as plain data: its class and constructor arguments (see `Saveable`)."""
    return _Encoder().encode(obj, type(obj).__name__)


class _Encoder:
    def __init__(self):
        self.memo: dict[int, int] = {}  # id(object) -> reference number: shared objects are written once
        self.keep: list[Any] = []  # the encoded objects stay alive, so their ids stay unique

    def encode(self, v: Any, where: str) -> Any:
        import dataclasses

        if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
            return v
        if isinstance(v, (np.ndarray, np.generic)):
            return to_plain(v)
        if isinstance(v, (list, tuple)):
            return type(v)(self.encode(x, f"{where}[{i}]") for i, x in enumerate(v))
        if isinstance(v, dict):
            return {"__rlx_dict__": [[self.encode(k, where), self.encode(x, f"{where}[{k!r}]")] for k, x in v.items()]}
        if isinstance(v, torch.device):
            return {"__rlx_device__": str(v)}
        if isinstance(v, torch.dtype):
            return {"__rlx_dtype__": str(v).removeprefix("torch.")}
        space = _encode_space(v, self, where)
        if space is not None:
            return space
        if id(v) in self.memo:
            return {"__rlx_ref__": self.memo[id(v)]}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out = {"__rlx_dataclass__": _qualname(type(v)), "fields": {
                f.name: self.encode(getattr(v, f.name), f"{where}.{f.name}") for f in dataclasses.fields(v) if f.init}}
        elif getattr(v, "rlx_rebuild", None) is not None:  # built by a registered function (see `rebuilder`)
            name, args = v.rlx_rebuild
            if name not in _REBUILDERS:
                raise TypeError(f"cannot save {where}: its rebuild function {name} is not registered with "
                                "rlx.core.checkpoint.rebuilder")
            out = {"__rlx_call__": name, "args": [self.encode(a, f"{where}({name} argument {i})") for i, a in enumerate(args)]}
        elif isinstance(v, Saveable):
            args, kwargs = v._rlx_init
            out = {"__rlx_object__": _qualname(type(v)),
                   "args": [self.encode(a, f"{where}({type(v).__name__} argument {i})") for i, a in enumerate(args)],
                   "kwargs": {k: self.encode(a, f"{where}({type(v).__name__} argument {k})") for k, a in kwargs.items()}}
        else:
            raise TypeError(f"cannot save {where}: it is a {type(v).__module__}.{type(v).__qualname__}, which is neither "
                            "plain data nor an object that records its constructor arguments "
                            "(subclass rlx.core.checkpoint.Saveable); save its state_dict() instead")
        self.memo[id(v)] = out["id"] = len(self.memo)
        self.keep.append(v)
        return out


def _encode_space(v: Any, enc: _Encoder, where: str) -> dict[str, Any] | None:
    import sys

    spaces = sys.modules.get("gymnasium.spaces")
    if spaces is None or not isinstance(v, spaces.Space):
        return None
    kind = type(v).__name__
    if type(v) is spaces.Box:
        body = {"low": torch.from_numpy(v.low.copy()), "high": torch.from_numpy(v.high.copy()), "dtype": v.dtype.name}
    elif type(v) is spaces.Discrete:
        body = {"n": int(v.n), "start": int(v.start)}
    elif type(v) is spaces.MultiDiscrete:
        body = {"nvec": torch.from_numpy(v.nvec.copy()), "start": torch.from_numpy(v.start.copy())}
    elif type(v) is spaces.MultiBinary:
        body = {"n": [int(x) for x in np.atleast_1d(v.n)]}
    elif type(v) is spaces.Dict:
        body = {"spaces": {k: enc.encode(s, f"{where}[{k!r}]") for k, s in v.spaces.items()}}
    elif type(v) is spaces.Tuple:
        body = {"spaces": [enc.encode(s, f"{where}[{i}]") for i, s in enumerate(v.spaces)]}
    else:
        raise TypeError(f"cannot save {where}: gymnasium space {kind} is not one of Box, Discrete, MultiDiscrete, "
                        "MultiBinary, Dict, Tuple")
    return {"__rlx_space__": kind, **body}


def _decode_space(d: dict[str, Any], dec) -> Any:
    from gymnasium import spaces

    kind = d["__rlx_space__"]
    if kind == "Box":
        return spaces.Box(d["low"].numpy(), d["high"].numpy(), dtype=np.dtype(d["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(d["nvec"].numpy(), start=d["start"].numpy())
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"] if len(d["n"]) > 1 else d["n"][0])
    if kind == "Dict":
        return spaces.Dict({k: dec(s) for k, s in d["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([dec(s) for s in d["spaces"]])
    raise UnsafeFileError(f"unknown gymnasium space {kind!r} in a learner file")


def _resolve(name: str, source: Any) -> Any:
    """A class named `module:qualname`, importing only rlx's own modules (others must be imported already)."""
    import importlib
    import sys

    module, _, qual = str(name).partition(":")
    if module not in sys.modules and not (module == "rlx" or module.startswith("rlx.")):
        raise UnsafeFileError(f"{source} names {name}, whose module {module} is not imported; rlx imports only its own "
                              f"modules from a file, so `import {module}` first if you trust it")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise UnsafeFileError(f"{source} names {name}, which does not exist (saved by another rlx version?)")
    return obj


def decode_init(data: Any, device: str | torch.device | None = None, source: Any = "the file") -> Any:
    """The inverse of `encode_init`: rebuilds dataclasses and Saveable objects (the outermost
    one gets `device=` when given and its constructor takes it)."""
    import dataclasses
    import inspect

    made: dict[int, Any] = {}

    def dec(v: Any, top: bool = False) -> Any:
        if isinstance(v, list | tuple):
            return type(v)(dec(x) for x in v)
        if not isinstance(v, dict):
            return v
        if "__rlx_ref__" in v:
            return made[v["__rlx_ref__"]]
        if "__rlx_dict__" in v:
            return {dec(k): dec(x) for k, x in v["__rlx_dict__"]}
        if "__rlx_device__" in v:
            return torch.device(v["__rlx_device__"])
        if "__rlx_dtype__" in v:
            return getattr(torch, v["__rlx_dtype__"])
        if "__rlx_space__" in v:
            return _decode_space(v, dec)
        if "__rlx_call__" in v:
            fn = _resolve(v["__rlx_call__"], source)  # imports only rlx's own modules
            if _REBUILDERS.get(str(v["__rlx_call__"])) is not fn:
                raise UnsafeFileError(f"{source} names {v['__rlx_call__']}, which is not a registered rebuild function")
            obj = fn(*[dec(a) for a in v["args"]])
        elif "__rlx_dataclass__" in v:
            cls = _resolve(v["__rlx_dataclass__"], source)
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise UnsafeFileError(f"{source} names {v['__rlx_dataclass__']} as a config, which is not a dataclass")
            obj = cls(**{k: dec(x) for k, x in v["fields"].items()})
        elif "__rlx_object__" in v:
            cls = _resolve(v["__rlx_object__"], source)
            if not (isinstance(cls, type) and issubclass(cls, Saveable)):
                raise UnsafeFileError(f"{source} names {v['__rlx_object__']}, which is not an rlx.core.checkpoint.Saveable class")
            args, kwargs = [dec(a) for a in v["args"]], {k: dec(a) for k, a in v["kwargs"].items()}
            if top and device is not None and "device" in inspect.signature(cls).parameters:
                bound = inspect.signature(cls).bind_partial(*args, **kwargs)  # device given by position or keyword
                bound.arguments["device"] = torch.device(device)
                args, kwargs = list(bound.args), dict(bound.kwargs)
            obj = cls(*args, **kwargs)
        else:
            return from_plain(v)
        made[v["id"]] = obj
        return obj

    return dec(data, top=True)
