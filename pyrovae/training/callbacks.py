"""Callbacks of :func:`pyrovae.training.fit`: the metrics log, early stopping, the progress bar
and the graceful stop on SIGINT/SIGTERM. Checkpoints and exact resume are
:class:`~pyrovae.training.checkpointing.Checkpointer`.

A callback subclasses :class:`Callback` and overrides the hooks it needs; each receives the
:class:`~pyrovae.training.loop.Loop` (modules, optimizer, state, the last epoch's ``record``).
Hooks run in the order the callbacks are given, on every process of a data-parallel run.
"""

import os
import sys

from tqdm.auto import tqdm

from pyrovae.jsonio import dumps, read_jsonl
from pyrovae.runs.checkpoint import atomic_write_text
from pyrovae.training.signals import GracefulStop

__all__ = ["Callback", "MetricsLog", "EarlyStopping", "ProgressBar", "GracefulStopping"]


class Callback:
    """Hooks of the training loop; every one does nothing by default."""

    def on_restore(self, loop):
        """Before anything else: load a saved state into the loop (resume)."""

    def on_fit_start(self, loop):
        """After restoring, before the first step."""

    def on_epoch_end(self, loop):
        """After an epoch's validation; ``loop.record`` holds its metrics."""

    def stop_requested(self):
        """The name of a reason to stop at the next step (e.g. ``"SIGTERM"``), or None."""
        return None

    def on_interrupt(self, loop):
        """Training stops before its end (a signal); return a phrase saying what was kept, or None."""
        return None

    def kept(self, loop):
        """After a failure: a phrase saying what was kept, or None."""
        return None

    def on_fit_end(self, loop):
        """Always last, whether training ended, stopped or failed."""


class MetricsLog(Callback):
    """One JSON line per epoch in ``path`` (``epoch``, ``step``, ``train_elbo``, ``valid_elbo``,
    ``seconds``), appended before that epoch's checkpoint: a resume from the checkpoint before
    drops the line again, so the log stays one line per epoch, in order. Written by rank 0."""

    def __init__(self, path):
        self.path = path

    def on_fit_start(self, loop):
        if loop.context.is_main and os.path.exists(self.path):  # lines after the restored epoch, a torn line
            keep = [r for r in read_jsonl(self.path) if r.get("epoch", loop.state.epoch + 1) <= loop.state.epoch]
            atomic_write_text(self.path, "".join(dumps(r, indent=None) + "\n" for r in keep))

    def on_epoch_end(self, loop):
        if loop.context.is_main:
            with open(self.path, "a") as f:
                f.write(dumps(loop.record, indent=None) + "\n")


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation ELBO (counted in the state,
    so a resumed run stops where the uninterrupted one would)."""

    def __init__(self, patience):
        self.patience = patience

    def _check(self, loop):
        s = loop.state
        if s.since_best >= self.patience:
            loop.stop_reason = (f"early stopping at epoch {s.epoch}: no better validation ELBO for "
                                f"{self.patience} epochs (best {s.best_valid_elbo:.3f} at epoch {s.best_epoch})")

    on_fit_start = on_epoch_end = _check


class ProgressBar(Callback):
    """A tqdm bar over epochs on a terminal (``progress=None``), or forced on or off; without a
    bar, a line every ``every`` epochs (and at the last) in ``log``."""

    def __init__(self, epochs, progress=None, log=sys.stderr, every=10):
        self.epochs, self.progress, self.log, self.every = epochs, progress, log, every
        self.bar = None

    def on_fit_start(self, loop):
        quiet = not loop.context.is_main or (self.progress is not None and not self.progress)
        self.bar = tqdm(total=self.epochs, initial=loop.state.epoch, desc="train", unit="epoch",
                        disable=True if quiet else None)  # None: only on a terminal
        self.printing = loop.context.is_main and self.bar.disable

    def on_epoch_end(self, loop):
        r, epoch = loop.record, loop.state.epoch
        self.bar.update(1)
        self.bar.set_postfix(train=f"{r['train_elbo']:.2f}", valid=f"{r['valid_elbo']:.2f}")
        if self.printing and (epoch % self.every == 0 or epoch == self.epochs or loop.stop_reason):
            print(f"epoch {epoch}/{self.epochs}: train ELBO {r['train_elbo']:.3f}, valid ELBO "
                  f"{r['valid_elbo']:.3f} nats", file=self.log, flush=True)
        if loop.stop_reason and loop.context.is_main:
            print(loop.stop_reason, file=self.log)

    def on_fit_end(self, loop):
        if self.bar is not None:
            self.bar.close()


class GracefulStopping(Callback):
    """On SIGINT or SIGTERM, finish the current step, let the checkpointer save it, and stop
    (:class:`~pyrovae.training.signals.GracefulStop`); a second signal stops at once."""

    def __init__(self):
        self.signals = GracefulStop()

    def on_fit_start(self, loop):
        self.signals.__enter__()

    def stop_requested(self):
        return self.signals.requested or None

    def on_fit_end(self, loop):
        self.signals.__exit__(None, None, None)
