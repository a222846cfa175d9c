"""Errors of a run that has started, and of files that are refused (the run's error contract,
docs/reliability.md). Configuration errors are `ConfigError` / `EnvError` / `DatasetError`.

* `UnsafeFileError`: a file rlx was asked to load holds something other than tensors and
  plain Python types (a pickle that could run code); refused before any of it is executed.
* `DivergenceError`: a loss, gradient norm or parameter became NaN/inf (exit code 3).
* `RunFailure`: anything else that failed after the run started, named in one line
  (the env and global step, the dataset and row, ...); the traceback goes to `<run>/error.txt`.
"""

from __future__ import annotations


class UnsafeFileError(ValueError):
    """A file that is not plain tensors/JSON-like data; it was not executed."""


class DivergenceError(FloatingPointError):
    """A non-finite loss, gradient norm or parameter (trainer.on_nonfinite=stop)."""


class RunFailure(RuntimeError):
    """A named failure after the run started (an env's exception, a late dataset problem, ...)."""


class EnvFailure(RunFailure):
    """The environment raised or returned NaN/inf mid-run; the message names the global step
    (the run adds the env's name)."""
