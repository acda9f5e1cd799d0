"""Exception types raised for bad input.

Every error the user can fix derives from :class:`PyrovaeError`; the CLI prints
its message on one line and exits with status 2. The subclasses also derive
from the matching built-in type so ``except ValueError`` keeps working.
"""

__all__ = ["PyrovaeError", "DataError", "ConfigError", "CheckpointError", "UnknownNameError"]


class PyrovaeError(Exception):
    """Base class of user-fixable errors (bad data, options, checkpoints, run directories)."""


class DataError(PyrovaeError, ValueError):
    """The data is missing, of the wrong shape, non-finite, or outside the likelihood's support."""


class ConfigError(PyrovaeError, ValueError):
    """An option value or a combination of options is invalid."""


class CheckpointError(PyrovaeError):
    """A checkpoint or run directory is missing, corrupted, or does not match the request."""


class UnknownNameError(PyrovaeError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])
