"""One optimizer step, the same object for plain, JIT-compiled, semi-supervised and
data-parallel training."""

import functools
import math

import pyro

from pyrovae.inference.elbos import loss_and_grads
from pyrovae.training.distributed import SINGLE

__all__ = ["Step", "as_objective"]


def as_objective(objective, model, guide, num_data):
    """``objective(x, idx) -> float`` that accumulates the gradient of one minibatch's loss
    (nats, full-data scale) and returns the loss.

    :param objective: a Pyro ELBO (``Trace_ELBO()``, ``TraceMeanField_ELBO()``, ...), run on
        ``model(x, idx, num_data)`` and ``guide(x, idx, num_data)``; or such a callable already
        (:func:`pyrovae.training.objective.make_objective` builds the JIT and semi-supervised ones).
    """
    if isinstance(objective, pyro.infer.ELBO):
        return functools.partial(_elbo_objective, objective, model, guide, num_data)
    if not callable(objective):
        raise TypeError(f"objective must be a Pyro ELBO or a callable (x, idx) -> loss, got {objective!r}")
    return objective


def _elbo_objective(elbo, model, guide, num_data, x, idx):
    return loss_and_grads(elbo, model, guide, x, idx, num_data)


class Step:
    """``step(x, idx, size, index, stop) -> (loss, stop)``: clear the gradients, accumulate the
    minibatch's gradient, and step the optimizer unless the loss is NaN or infinite.

    :param objective: ``objective(x, idx) -> float`` (see :func:`as_objective`); under
        data-parallel training a :class:`~pyrovae.training.distributed.DataParallelObjective`, called as
        ``objective(x, idx, size)`` with ``size`` the global batch size.
    :param optimizer: a :class:`~pyrovae.training.optim.Optimizers` (or anything with ``zero_grad``,
        ``step(shared=, local=)`` and ``local_updates``).
    :param int local_steps: coordinate ascent: this many updates of the batch's own per-example
        rows first, then one update of the rest (0: one joint update, as SVI).
    :param schedule: an object with ``set_step(index)`` (the relaxed estimator's annealed
        temperature), or None.
    :param context: a :class:`~pyrovae.training.distributed.Context`; with several processes the loss and
        the stop flag are summed over them in one collective, so every process stops at the
        same step.
    """

    def __init__(self, objective, optimizer, local_steps=0, schedule=None, context=SINGLE):
        self.objective, self.optimizer, self.local_steps = objective, optimizer, local_steps
        self.schedule = schedule if hasattr(schedule, "set_step") else None
        self.context = context

    def loss(self, x, idx, size):
        return self.objective(x, idx, size) if self.context.parallel else self.objective(x, idx)

    def __call__(self, x, idx, size, index=0, stop=None):
        """:param index: the step's number (for ``schedule``).
        :param stop: ``stop() -> bool``, asked once the gradient is computed (a signal that
            arrived during this step stops after it).
        :returns: ``(loss, stop)``: the batch's loss (nats, full-data scale, all processes
            together) and whether any process asked to stop."""
        if self.schedule is not None:
            self.schedule.set_step(index)
        self.optimizer.zero_grad(set_to_none=True)
        if self.local_steps:
            self.optimizer.local_updates(lambda: self.loss(x, idx, size), self.local_steps)
        loss = self.loss(x, idx, size)
        stop = bool(stop and stop())
        if self.context.parallel:
            loss, asked = self.context.all_sum(loss, float(stop))
            stop = asked > 0
        if math.isfinite(loss):
            self.optimizer.step(local=not self.local_steps)  # SVI: joint; coordinate ascent: the rest
        return loss, stop
