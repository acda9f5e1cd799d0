"""Exception types raised for bad input.

Every error the user can fix derives from :class:`PyrovaeError`; the CLI prints
its message on one line and exits with status 2. The subclasses also derive
from the matching built-in type so ``except ValueError`` keeps working.
"""

__all__ = ["PyrovaeError", "DataError", "ConfigError", "CheckpointError", "StorageError", "UnknownNameError",
           "TrainingDiverged", "Interrupted"]


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


class StorageError(PyrovaeError):
    """Reading or writing a file failed (a full disk, a read-only folder, a path under a file);
    the message names the path and says which checkpoint is intact."""


class TrainingDiverged(PyrovaeError):
    """The loss became NaN or infinite; the last good checkpoint was kept (exit status 1)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a command; the message says what was kept and how to continue.
    A ``KeyboardInterrupt``, so code that catches Ctrl-C keeps working."""

    def __str__(self):
        return str(self.args[0]) if self.args else "interrupted"
