"""Equal-time training: the same model and initial parameters, one estimator, a wall-clock budget.

Only the training steps (``loss_and_grads`` and the optimizer step) count against the budget;
the validation ELBO, recorded at evenly spaced points of the budget, does not. Every estimator
is evaluated the same way, by :func:`pyrovae.training.validation_elbo` with the unwrapped guide and
the unrelaxed model, so the curves are comparable.
"""

import math
import time

import torch

from pyrovae.data import batches
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.training.optim import make_optimizers
from pyrovae.training.validation import validation_elbo

__all__ = ["train_for"]


def train_for(budget, model, guide, elbo, guide_fn, data, config, device, seed, num_points=20, num_valid=500):
    """Train ``model`` and ``guide`` in place with ``elbo`` for ``budget`` seconds of step time.

    :param float budget: seconds of training steps.
    :param guide_fn: the guide as the estimator runs it (``guide`` under its messengers).
    :param data: a :class:`~pyrovae.data.Dataset`; minibatches of ``config.batch_size`` from its
        training split, Adam at ``config.lr`` (SparseAdam at ``config.local_lr`` for tables).
    :param int num_valid: validation examples of the ELBO (the first ones of the split).
    :returns: ``{"seconds": [...], "valid_elbo": [...], "steps": int, "diverged": bool}``, the
        validation ELBO in nats per datapoint at the given step time.
    """
    optimizer = make_optimizers([model, guide], config.lr, config.local_lr)
    order = torch.Generator().manual_seed(seed)
    valid = data.valid.x[:num_valid]
    dynamic = data.binarization == "dynamic"
    num_data = len(data.train)
    seconds, elbos = [0.0], [validation_elbo(model, guide, valid, seed + 1, device)]
    clock, steps, diverged = 0.0, 0, False
    interval = budget / num_points
    while clock < budget and not diverged:
        for x, idx in batches(data.train, config.batch_size, order, dynamic, drop_last=True):
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss = loss_and_grads(elbo, model, guide_fn, x.to(device), idx.to(device), num_data)
            if not math.isfinite(loss):
                diverged = True
                break
            optimizer.step()
            clock += time.perf_counter() - t0
            steps += 1
            if clock >= seconds[-1] + interval or clock >= budget:
                seconds.append(clock)
                elbos.append(validation_elbo(model, guide, valid, seed + 1, device))
            if clock >= budget:
                break
    return {"seconds": seconds, "valid_elbo": elbos, "steps": steps, "diverged": diverged}
