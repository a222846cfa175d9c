"""Valid ranges declared next to each numeric config field, checked once before a run writes
anything (docs/architecture.md, "Valid ranges").

    lr: float = positive(1e-3)            # lr > 0
    gamma: float = bounded(0.99, 0, 1, "(]")  # 0 < gamma <= 1
    batch_size: int = count(256)          # >= 1
    hidden: list[int] = each(lambda: [64, 64], 1)  # every element >= 1
    activation: str = one_of("tanh", ACTIVATIONS)
    loggers: list[str] = some_of(lambda: ["jsonl"], LOGGERS)  # every element one of LOGGERS

`check_ranges(obj, "algo")` raises `ValueError` with one line naming the first field out of
its range (`None` values of optional fields are skipped; list values are checked per element).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable
from typing import Any


def bounded(default: Any, low: float | None = None, high: float | None = None, interval: str = "[]") -> Any:
    """A field whose value must lie in `low..high` (`interval`: "[]", "(]", "[)" or "()" for
    closed/open ends; `None`: unbounded on that side)."""
    if interval not in ("[]", "(]", "[)", "()"):
        raise ValueError(f"interval must be one of [], (], [), (); got {interval!r}")
    return dataclasses.field(default=default, metadata={"range": (low, high, interval)})


def positive(default: Any) -> Any:
    return bounded(default, 0, None, "()")


def nonneg(default: Any) -> Any:
    return bounded(default, 0, None, "[]")


def count(default: Any) -> Any:
    """An integer count: >= 1."""
    return bounded(default, 1, None, "[]")


def unit(default: Any, interval: str = "[]") -> Any:
    """A probability/fraction in [0, 1] (or the open/half-open interval given)."""
    return bounded(default, 0, 1, interval)


def each(factory: Any, low: float | None = None, high: float | None = None, interval: str = "[]") -> Any:
    """A list field (`default_factory=factory`) whose every element must lie in `low..high`."""
    return dataclasses.field(default_factory=factory, metadata={"range": (low, high, interval)})


def one_of(default: str, choices: Iterable[str]) -> Any:
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def some_of(factory: Any, choices: Iterable[str]) -> Any:
    """A list field (`default_factory=factory`) whose every element must be one of `choices`."""
    return dataclasses.field(default_factory=factory, metadata={"choices": tuple(choices)})


def describe(low: float | None, high: float | None, interval: str) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if interval[0] == '[' else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if interval[1] == ']' else '<'} {high:g}")
    return " and ".join(parts)


def _inside(v: float, low: float | None, high: float | None, interval: str) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return False
    if low is not None and (v < low or (interval[0] == "(" and v == low)):
        return False
    return not (high is not None and (v > high or (interval[1] == ")" and v == high)))


def check_ranges(obj: Any, prefix: str) -> None:
    """Check every field of dataclass `obj` that declares a range or choices."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) and "choices" in f.metadata else [value]:
            if "choices" in f.metadata and v not in f.metadata["choices"]:
                close = difflib.get_close_matches(str(v), f.metadata["choices"], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{prefix}.{f.name}={v!r} is not one of {', '.join(f.metadata['choices'])}{hint}")
        if "range" in f.metadata:
            low, high, interval = f.metadata["range"]
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if not _inside(v, low, high, interval):
                    raise ValueError(f"{prefix}.{f.name}={v!r} is out of range: it must be {describe(low, high, interval)}")
