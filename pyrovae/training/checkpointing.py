"""Checkpoints and exact resume: ``last.pt`` after every epoch (and at a graceful stop, with the
position inside the epoch), ``best.pt`` when the validation ELBO improves, written atomically.

A checkpoint holds the model, guide and optimizer states, Pyro's param store (the decaying
averages of ``TraceGraph_ELBO``'s baselines), the RNG states of torch, NumPy, Python and the
data order, and the :class:`~pyrovae.training.state.TrainState`. Resuming from it gives the
parameters and metrics of the uninterrupted run, bit for bit.
"""

import os

import pyro

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
    :raises CheckpointError: on restore, if ``last.pt`` is missing, corrupted, or does not fit
        the model, guide and optimizer.
    """

    def __init__(self, run_dir, resume=False, resume_hint=None, rerun_hint="start it again"):
        self.run_dir, self.resume, self.rerun = run_dir, resume, rerun_hint
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
            for path in paths:
                save_checkpoint(path, state)

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
        self._save(loop, *([self.best] if loop.state.best_epoch == loop.state.epoch else []), self.last)

    def on_interrupt(self, loop):
        s = loop.state
        if s.batch:  # inside an epoch: save the step (the epoch's end was saved already)
            self._save(loop, self.last)
            where = f"epoch {s.epoch + 1}, batch {s.batch}"
        else:
            where = f"epoch {s.epoch}"
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
