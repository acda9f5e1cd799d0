"""Checkpoints and exact resume: ``last.pt`` after every epoch, or every ``every`` epochs (and at
the end, and at a graceful stop, with the position inside the epoch), ``best.pt`` when the
validation ELBO improves (with ``every`` > 1: kept in memory and written with the next
``last.pt``), written atomically; an epoch that writes both serializes its state once
(:func:`~pyrovae.runs.checkpoint.save_checkpoint`). Between checkpoints the files on disk stay a consistent,
resumable state of the epoch they name; a run killed there repeats the epochs after it.

A checkpoint holds the model, guide and optimizer states, Pyro's param store (the decaying
averages of ``TraceGraph_ELBO``'s baselines), the RNG states of torch, NumPy, Python and the
data order, and the :class:`~pyrovae.training.state.TrainState`. Resuming from it gives the
parameters and metrics of the uninterrupted run, bit for bit.
"""

import os

import pyro
import torch

from pyrovae.errors import CheckpointError, PyrovaeError
from pyrovae.runs.checkpoint import (
    describe_mismatch,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    saved_epoch,
    set_rng_state,
)
from pyrovae.training.callbacks import Callback
from pyrovae.training.distributed import shard_state, whole_state
from pyrovae.training.state import TrainState

__all__ = ["Checkpointer", "LAST", "BEST"]

LAST, BEST = "last.pt", "best.pt"


class Checkpointer(Callback):
    """Save ``last.pt`` and ``best.pt`` in ``run_dir``; with ``resume``, first restore ``last.pt``.

    :param str run_dir: an existing folder (rank 0 writes it).
    :param bool resume: restore the loop from ``run_dir/last.pt`` before training.
    :param str resume_hint: how to continue, quoted in the stop messages.
    :param str rerun_hint: what to do when training fails before the first checkpoint.
    :param int every: epochs between checkpoints (``--checkpoint-every``); the last epoch and a
        graceful stop are always saved.
    :raises CheckpointError: on restore, if ``last.pt`` is missing, corrupted, or does not fit
        the model, guide and optimizer.
    """

    def __init__(self, run_dir, resume=False, resume_hint=None, rerun_hint="start it again", every=1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint every must be a positive integer, got {every!r}")
        self.run_dir, self.resume, self.rerun, self.every = run_dir, resume, rerun_hint, every
        self.pending_best = None  # the best epoch's checkpoint, not yet written (every > 1)
        self.saved_epoch = None  # the epoch last.pt holds, as written by this callback
        self.hint = resume_hint or f"fit(..., callbacks=[Checkpointer({run_dir!r}, resume=True), ...])"
        self.last, self.best = os.path.join(run_dir, LAST), os.path.join(run_dir, BEST)

    def state_dict(self, loop):
        """The checkpoint of the loop now (collective under data-parallel training: the per-example
        tables are gathered from every process)."""
        guide_state, optim_state = whole_state(loop.context, loop.guide, loop.optimizer, loop.num_data)
        rng = get_rng_state(loop.data_gen)
        return {
            "model": loop.model.state_dict(), "guide": guide_state, "optimizer": optim_state,
            "param_store": {name: value.detach().clone() for name, value in pyro.get_param_store().items()},
            "rng": rng, **loop.state.to_checkpoint(),
            **({"rank_rng": loop.context.gather_objects(rng)} if loop.context.parallel else {}),
        }

    def _save(self, loop, *paths):
        state = self.state_dict(loop)
        if loop.context.is_main:
            save_checkpoint(paths[0], state, *paths[1:])
        return state

    def _flush(self, loop):
        """Write ``best.pt`` (if a better epoch is pending) and ``last.pt`` of the loop now."""
        if self.pending_best is not None:
            if loop.context.is_main:
                save_checkpoint(self.best, self.pending_best)
            self.pending_best = None
        self._save(loop, self.last)
        self.saved_epoch = loop.state.epoch

    def on_restore(self, loop):
        if not self.resume:
            return
        state = load_checkpoint(self.last, map_location=loop.device)
        try:
            guide_state, optim_state = shard_state(loop.context, loop.guide, state["guide"], state["optimizer"])
            loop.model.load_state_dict(state["model"])
            loop.guide.load_state_dict(guide_state)
            loop.optimizer.load_state_dict(optim_state)
            for name, value in state.get("param_store", {}).items():
                pyro.get_param_store()[name] = value
            ranks = state.get("rank_rng", [state["rng"]])
            context = loop.context
            set_rng_state(ranks[context.rank] if len(ranks) == context.world_size else state["rng"], loop.data_gen)
            loop.state = TrainState.from_checkpoint(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"--resume: {self.last} does not fit {os.path.join(self.run_dir, 'config.json')} "
                                  f"({describe_mismatch(err)}); restore the matching config.json, or start a new run "
                                  "with another --out") from None

    def on_epoch_end(self, loop):
        epoch = loop.state.epoch
        improved = loop.state.best_epoch == epoch
        due = epoch % self.every == 0 or (loop.epochs is not None and epoch >= loop.epochs)
        if due and improved:  # this epoch is the best: one state, both files
            self.pending_best = None
            self._save(loop, self.best, self.last)
            self.saved_epoch = epoch
        elif due:
            self._flush(loop)
        elif improved:  # a copy: the live tensors move on
            self.pending_best = _copy(self.state_dict(loop))

    def on_fit_end(self, loop):
        if loop.finished and self.saved_epoch != loop.state.epoch:  # stopped early between checkpoints
            self._flush(loop)

    def on_interrupt(self, loop):
        s = loop.state
        if s.batch or self.saved_epoch != s.epoch:  # inside an epoch, or its end not yet saved
            self._flush(loop)
        where = f"epoch {s.epoch + 1}, batch {s.batch}" if s.batch else f"epoch {s.epoch}"
        return f"{where} is saved in {self.last}; continue with: {self.hint}"

    def kept(self, loop):
        try:
            epoch = saved_epoch(self.last)
        except PyrovaeError:
            return f"{self.last} could not be read back"
        if epoch is None:
            return (f"No checkpoint was written (it failed in the first epoch), so {self.run_dir} holds nothing "
                    f"trained: {self.rerun}")
        return f"The last good checkpoint (epoch {epoch}) is kept in {self.last}"


def _copy(state):
    """``state`` with every tensor cloned (nested dicts and lists too)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_copy(v) for v in state)
    return state
