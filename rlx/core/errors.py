"""The setting errors of rlx: a bad command line, config, environment or dataset.

Each is a `ValueError` whose message is one line saying what was wrong and how to fix it;
`python -m rlx.train` prints it without a traceback and exits 2. They live in `core` so
that every layer (envs, algos, the sweep, the CLI) raises the same classes without
importing the CLI module.
"""

from __future__ import annotations

__all__ = ["ConfigError", "EnvError", "DatasetError", "SETTING_ERRORS"]


class ConfigError(ValueError):
    """A command-line/config problem; printed as one line without a traceback."""


class EnvError(ValueError):
    """An environment could not be built or broke a gymnasium rule."""


class DatasetError(EnvError):
    """A dataset is missing or malformed (an EnvError, so the CLI prints it as one line)."""


# errors that mean "fix the command line" (printed as one line, exit code 2)
SETTING_ERRORS: tuple[type[BaseException], ...] = (ConfigError, EnvError, FileNotFoundError)
