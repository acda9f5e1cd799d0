"""The run directory's lock: one writer at a time (train, --resume, --overwrite), readers free.

An OS file lock (``fcntl.flock``, exclusive and non-blocking) on ``.lock`` in the run directory,
held by the process that writes the run for as long as it writes, and removed when it is done.
The kernel releases the lock when that process exits in any way (SIGKILL included), so a lock
file left by a dead process holds no lock: the next writer simply takes it. The file holds the
writer's PID, for the refusal message.
``evaluate``, ``plot`` and the other readers take no lock and run while training goes on.
"""

import fcntl
import os

from pyrovae.errors import CheckpointError

__all__ = ["LOCK", "RunLock"]

LOCK = ".lock"


class RunLock:
    """The lock of one run directory; :meth:`acquire` takes it, :meth:`release` (or the process's
    exit) gives it back."""

    def __init__(self):
        self.fd = None
        self.path = None

    def acquire(self, run_dir):
        """Take the lock of ``run_dir`` (an existing folder).

        :raises CheckpointError: if another process holds it (naming its PID), or the lock file
            cannot be written.
        """
        if self.fd is not None:
            return self
        path = os.path.join(run_dir, LOCK)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise CheckpointError(f"cannot write the lock file {path}: {err.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CheckpointError(f"run directory {run_dir} is being written by another process (PID {holder}); "
                                      "wait for it to finish or stop it, or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.path = fd, path
        return self

    def release(self):
        """Remove the lock file and give the lock back (a process killed before this leaves the
        file, but no lock: the next writer takes it)."""
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
