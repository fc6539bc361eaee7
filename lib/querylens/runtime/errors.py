"""The errors a user can fix: the CLI prints their message on one line and exits 2.

Anything else is a bug or an environment failure (a CUDA out-of-memory, a lost executor) and
keeps its full traceback.
"""

from __future__ import annotations


class QuerylensError(Exception):
    """Base of every error whose message tells the user what to change."""


class ConfigError(QuerylensError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


class InputError(QuerylensError, ValueError):
    """Search logs are missing, unreadable or lack a required column."""


class DataError(QuerylensError, ValueError):
    """The run's data cannot support what the config asks (too few rows, mixed dimensions)."""


class ModelLoadError(QuerylensError, RuntimeError):
    """A model could not be loaded; the message names it and where it was looked for."""


class StageInputError(QuerylensError):
    """A stage was started before the stage that writes one of its input tables."""


class SubmitError(QuerylensError, RuntimeError):
    """spark-submit packaging or launch failed; the message says which step and why."""


def first_line(exc: BaseException) -> str:
    """The first line of an error message, or its type when the message is empty."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
