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


class MetastoreBusyError(QuerylensError, RuntimeError):
    """Another process holds the embedded Derby metastore; the message names its folder."""


class DiskFullError(QuerylensError, OSError):
    """A write found no space left on a device; the message says what was full."""


NO_SPACE = "No space left on device"


def no_space(exc: BaseException) -> str | None:
    """The line of `exc`, or of an error it was raised from or during, that reports a full disk
    (errno ENOSPC, or "No space left on device" in a Python or Java message), else None."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            where = f": {current.filename}" if current.filename else ""
            return f"{current.strerror or NO_SPACE} (errno ENOSPC){where}"
        java = getattr(current, "java_exception", None)
        for line in f"{current}\n{java if java is not None else ''}".splitlines():
            if NO_SPACE.lower() in line.lower() or "ENOSPC" in line:
                return line.strip().removeprefix("Caused by: ")[:300]
        current = current.__cause__ or current.__context__
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an error message, or its type when the message is empty."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
