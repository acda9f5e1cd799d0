"""``fit``: the training loop over any model, guide, objective and data, with callbacks.

It reads top to bottom: restore (callbacks), then per epoch a pass over shuffled minibatches
(one :class:`~pyrovae.training.step.Step` each), the validation ELBO, the state's best and the
epoch-end callbacks (metrics log, checkpoints, early stopping, progress). A NaN or infinite loss
raises :class:`~pyrovae.errors.TrainingDiverged` before the optimizer moves; a signal caught by
:class:`~pyrovae.training.callbacks.GracefulStopping` stops at the next step boundary, after the
callbacks saved it, with :class:`~pyrovae.errors.Interrupted`.
"""

import math
import time

import torch

from pyrovae.data import Split, batches
from pyrovae.errors import Interrupted, TrainingDiverged
from pyrovae.training.distributed import SINGLE, shard_batches
from pyrovae.training.optim import make_optimizers
from pyrovae.training.state import TrainState
from pyrovae.training.step import Step, as_objective
from pyrovae.training.validation import validation_scores

__all__ = ["fit", "Loop"]


class Loop:
    """What the callbacks see: ``model``, ``guide``, ``optimizer``, ``step``, ``state`` (a
    :class:`~pyrovae.training.state.TrainState`), ``data_gen`` (the data-order generator),
    ``context``, ``device``, ``num_data``, ``epochs`` (the most epochs ``fit`` runs), ``record``
    (the last epoch's metrics), ``stop_reason`` (set by a callback to end training after this
    epoch) and ``finished`` (true once training ended without an error or a signal)."""

    def __init__(self, model, guide, optimizer, step, data_gen, context, device, num_data, epochs=None):
        self.model, self.guide, self.optimizer, self.step = model, guide, optimizer, step
        self.data_gen, self.context, self.device, self.num_data = data_gen, context, device, num_data
        self.epochs = epochs
        self.state = TrainState(epoch_data_rng=data_gen.get_state())
        self.record, self.stop_reason, self.finished = None, None, False


def fit(model, guide, objective, train, epochs, *, valid=None, batch_size=100, optimizer=None, lr=1e-3,
        callbacks=(), seed=0, device="cpu", local_steps=0, binarize=False, drop_last=False, num_data=None,
        schedule=None, context=SINGLE, validate=None):
    """Train ``model`` and ``guide`` on ``train`` for up to ``epochs`` epochs.

    :param model, guide: modules called as ``model(x, idx, num_data)`` and ``guide(x, idx,
        num_data)`` for a minibatch ``x`` (B, P) with row indices ``idx`` (B,) into ``train``.
    :param objective: a Pyro ELBO (``pyro.infer.Trace_ELBO()``, ...), or a callable
        ``(x, idx) -> float`` that accumulates the gradient of the minibatch's loss (see
        :func:`~pyrovae.training.step.as_objective`).
    :param train: a tensor (N, P) or a :class:`~pyrovae.data.Split`; under data-parallel
        training, this process's rows (``context.shard``).
    :param valid: a tensor (M, P) scored each epoch by
        :func:`~pyrovae.training.validation.validation_scores` (or ``validate()``, if given, which
        returns the validation ELBO, or a dict with ``"elbo"`` and optionally ``"reconstruction"``
        and ``"kl"``); without either, the epoch's training ELBO picks the best epoch. The epoch's
        ``record`` holds ``valid_elbo`` and, where given, ``valid_reconstruction`` and ``valid_kl``.
    :param optimizer: a :class:`~pyrovae.training.optim.Optimizers`; by default Adam(``lr``) over both
        modules' parameters (SparseAdam for per-example tables).
    :param callbacks: :class:`~pyrovae.training.callbacks.Callback` s, run in this order; e.g.
        ``[MetricsLog(path), Checkpointer(run_dir, resume=True), EarlyStopping(30),
        ProgressBar(epochs), GracefulStopping()]``.
    :param int seed: seeds the data order (a generator of its own; the caller seeds the global RNGs).
    :param bool binarize: dynamic binarization, x ~ Bernoulli(intensity), each epoch.
    :param bool drop_last: skip the final smaller batch of each epoch.
    :param int num_data: the number of training examples (the plate's size; default ``len(train)``,
        under data-parallel training the global number).
    :param schedule: an object with ``set_step(step)`` called before each step (the relaxed
        estimator's annealed temperature); by default ``objective``, if it has one.
    :param context: a :class:`~pyrovae.training.distributed.Context` (data-parallel training: ``objective``
        is a :class:`~pyrovae.training.distributed.DataParallelObjective`).
    :returns: the final :class:`~pyrovae.training.state.TrainState`.
    :raises TrainingDiverged: for a NaN or infinite loss (the optimizer has not applied it).
    :raises Interrupted: after SIGINT/SIGTERM (with ``GracefulStopping``), once saved.
    """
    train = train if isinstance(train, Split) else Split(train, None)
    device = torch.device(device)
    num_data = num_data or len(train)
    optimizer = optimizer or make_optimizers([model, guide], lr)
    step = Step(as_objective(objective, model, guide, num_data), optimizer, local_steps,
                schedule=objective if schedule is None else schedule, context=context)
    loop = Loop(model, guide, optimizer, step, torch.Generator().manual_seed(seed), context, device, num_data, epochs)
    if validate is None and valid is not None:
        def validate():
            return validation_scores(model, guide, valid, seed + 1, device, context)

    def epoch_batches():
        if context.parallel:
            return shard_batches(context, train.x, num_data, batch_size, loop.data_gen, binarize, drop_last)
        return ((x, idx, len(idx)) for x, idx in batches(train, batch_size, loop.data_gen, binarize,
                                                           drop_last=drop_last))

    seen = num_data - (num_data % batch_size if drop_last else 0)  # examples per epoch
    try:
        _each(callbacks, "on_restore", loop)
        _each(callbacks, "on_fit_start", loop)
        while loop.state.epoch < epochs and loop.stop_reason is None:
            _epoch(loop, epoch_batches, callbacks, seen, validate)
        loop.finished = True
    except KeyboardInterrupt as err:  # a second signal: no clean boundary to stop at
        if isinstance(err, Interrupted):
            raise
        kept = next(filter(None, (cb.kept(loop) for cb in callbacks)), "nothing was saved")
        raise Interrupted(f"{_asked(callbacks) or 'SIGINT'}, twice: stopped at once; {kept}") from None
    finally:
        _each(callbacks, "on_fit_end", loop)
    return loop.state


def _epoch(loop, epoch_batches, callbacks, seen, validate):
    """One pass over the data (or the rest of an interrupted one), validation and the epoch-end hooks."""
    state, t0 = loop.state, time.perf_counter()
    skip, total = state.batch, state.partial_total
    if skip:  # resume inside this epoch: replay its data order up to where it stopped
        loop.data_gen.set_state(state.epoch_data_rng)
    state.epoch_data_rng = loop.data_gen.get_state()
    loop.model.train(), loop.guide.train()
    for batch, (x, idx, size) in enumerate(epoch_batches(), 1):
        if batch <= skip:
            continue
        loss, stop = loop.step(x.to(loop.device), idx.to(loop.device), size, state.step, lambda: _asked(callbacks))
        state.step += 1
        if not math.isfinite(loss):
            kept = next(filter(None, (cb.kept(loop) for cb in callbacks)), "Nothing was saved")
            raise TrainingDiverged(f"the loss became {loss} at step {state.step} (epoch {state.epoch + 1}); "
                                   f"training stopped. {kept}; try a lower --lr")
        total += loss * size / loop.num_data  # this batch's share of the epoch's loss
        if stop:
            state.batch, state.partial_total = batch, total
            _interrupt(loop, callbacks)
    state.batch, state.partial_total = 0, 0.0
    loop.model.eval(), loop.guide.eval()
    scores = validate() if validate is not None else -total / seen
    parts = scores if isinstance(scores, dict) else {"elbo": scores}
    valid = parts["elbo"]
    state.epoch += 1
    state.epoch_data_rng = loop.data_gen.get_state()
    state.improve(valid)
    loop.record = {"epoch": state.epoch, "step": state.step, "train_elbo": -total / seen, "valid_elbo": valid,
                   **{f"valid_{k}": parts[k] for k in ("reconstruction", "kl") if k in parts},
                   "seconds": time.perf_counter() - t0}
    _each(callbacks, "on_epoch_end", loop)
    asked = bool(_asked(callbacks))  # every process stops at the same epoch, or the collectives would not match
    if loop.context.all_sum(float(asked))[0] > 0 if loop.context.parallel else asked:
        _interrupt(loop, callbacks)


def _asked(callbacks):
    return next(filter(None, (cb.stop_requested() for cb in callbacks)), None)


def _interrupt(loop, callbacks):
    kept = [k for k in (cb.on_interrupt(loop) for cb in callbacks) if k] or ["nothing was saved"]
    raise Interrupted(f"{_asked(callbacks) or 'signal'}: stopped cleanly at step {loop.state.step}; "
                      + "; ".join(kept))


def _each(callbacks, hook, loop):
    for callback in callbacks:
        getattr(callback, hook)(loop)
