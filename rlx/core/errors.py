"""Every error class of rlx, in `core` so that every layer (envs, algos, the sweep, the CLI)
raises the same classes without importing the CLI module (docs/reliability.md has the contract).

Setting errors (a bad command line, config, environment or dataset): each is a `ValueError` whose
message is one line saying what was wrong and how to fix it; `python -m rlx.train` prints it
without a traceback and exits 2 with nothing written.

Run errors (after the run started):
* `UnsafeFileError`: a file rlx was asked to load holds something other than tensors and
  plain Python types (a pickle that could run code); refused before any of it is executed.
* `DivergenceError`: a loss, gradient norm or parameter became NaN/inf (exit code 3).
* `RunFailure`: anything else that failed after the run started, named in one line
  (the env and global step, the dataset and row, ...); the traceback goes to `<run>/error.txt`.
"""

from __future__ import annotations

__all__ = ["ConfigError", "EnvError", "DatasetError", "SETTING_ERRORS", "UnsafeFileError", "DivergenceError",
           "RunFailure", "EnvFailure", "RunLocked"]


class ConfigError(ValueError):
    """A command-line/config problem; printed as one line without a traceback."""


class EnvError(ValueError):
    """An environment could not be built or broke a gymnasium rule."""


class DatasetError(EnvError):
    """A dataset is missing or malformed (an EnvError, so the CLI prints it as one line)."""


# errors that mean "fix the command line" (printed as one line, exit code 2)
SETTING_ERRORS: tuple[type[BaseException], ...] = (ConfigError, EnvError, FileNotFoundError)


class UnsafeFileError(ValueError):
    """A file that is not plain tensors/JSON-like data; it was not executed."""


class RunLocked(ValueError):
    """The run directory is locked by another live process."""


class DivergenceError(FloatingPointError):
    """A non-finite loss, gradient norm or parameter (trainer.on_nonfinite=stop)."""


class RunFailure(RuntimeError):
    """A named failure after the run started (an env's exception, a late dataset problem, ...)."""


class EnvFailure(RunFailure):
    """The environment raised or returned NaN/inf mid-run; the message names the global step
    (the run adds the env's name)."""
