"""Stop training cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill).

The first signal only sets a flag; the training loop checks it between optimizer steps,
writes a checkpoint at that clean boundary and stops. A second signal stops at once.
"""

import signal

__all__ = ["GracefulStop"]


class GracefulStop:
    """Context manager; ``requested`` turns True once SIGINT or SIGTERM arrives."""

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:  # second signal: give up on the clean stop
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not in the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
