"""The validation log-likelihood during training, every N epochs: where the ELBO and log p(x)
move apart (the ELBO can rise while the log-likelihood falls)."""

import time

from pyrovae.training.callbacks import Callback
from pyrovae.training.validation import validation_scores

__all__ = ["LogLikelihoodTracker"]


class LogLikelihoodTracker(Callback):
    """Every ``every`` epochs, add ``valid_log_likelihood`` to the epoch's record: the IWAE bound
    (Burda et al. 2016, arXiv:1509.00519, eq. 8) with K = ``num_samples`` importance samples per
    validation datapoint, nats per datapoint, from the same draws every time (``seed``; the
    global RNG is untouched, so training is the same with or without it). Also
    ``valid_log_likelihood_seconds``, the time it took. Place it before
    :class:`~pyrovae.training.MetricsLog` and the loggers, which write the record.

    :param x: the validation data, (M, P).
    :param int every: epochs between estimates (epochs every, 2 every, ...); 0 never.
    :param int num_samples: K.
    """

    def __init__(self, x, every, num_samples=100, seed=0):
        self.x, self.every, self.num_samples, self.seed = x, every, num_samples, seed

    def on_epoch_end(self, loop):
        if not self.every or loop.state.epoch % self.every:
            return
        t0 = time.perf_counter()
        scores = validation_scores(loop.model, loop.guide, self.x, self.seed, loop.device, loop.context,
                                   self.num_samples)
        loop.record["valid_log_likelihood"] = scores["log_likelihood"]
        loop.record["valid_log_likelihood_seconds"] = time.perf_counter() - t0
