"""Experiment trackers fed by the training loop: TensorBoard and MLflow, and your own.

A logger is a :class:`Logger`, a :class:`~pyrovae.training.Callback` that writes, on the main
process, per epoch the numbers of the epoch's record (``elbo/train``, ``elbo/valid``,
``valid/reconstruction``, ``valid/kl``, ``log_likelihood/valid`` when tracked, ``lr`` and
``seconds``), every ``images_every`` epochs the sample and reconstruction images of
:func:`pyrovae.analysis.plots.image_grids`, and once at the end (:meth:`Logger.log_final`, called
by ``pyrovae train``) the run's options beside its test log-likelihood, ELBO, active units and
PSIS k-hat share. ``metrics.jsonl`` stays the record: a logger only copies it.

``pyrovae train --logger tensorboard,mlflow`` builds them by name from :data:`LOGGERS`, which is
open like every registry (``LOGGERS.register``, the ``pyrovae.loggers`` entry-point group, or
``module:Class``). In a script, pass one to :func:`pyrovae.fit` and close it yourself::

    logger = TensorBoardLogger("runs/mine")
    fit(model, guide, Trace_ELBO(), x, 50, valid=v, callbacks=[logger])
    logger.close()
"""

import math

from pyrovae.registry import Registry
from pyrovae.training.callbacks import Callback

__all__ = ["Logger", "LOGGERS", "TensorBoardLogger", "MLflowLogger", "hparams", "scalars", "final_results"]

# record key -> the name a logger shows (grouped by the part before "/")
SCALARS = {"train_elbo": "elbo/train", "valid_elbo": "elbo/valid", "valid_reconstruction": "valid/reconstruction",
           "valid_kl": "valid/kl", "valid_log_likelihood": "log_likelihood/valid", "seconds": "seconds"}
FINAL = ("log_likelihood", "log_likelihood_stderr", "elbo", "active_units", "khat_share_above_0.7")


def scalars(record, optimizer=None):
    """The loggable numbers of an epoch's record, renamed by :data:`SCALARS`, with the shared
    optimizer's learning rate as ``lr``; non-finite values are left out."""
    out = {SCALARS[k]: float(v) for k, v in record.items()
           if k in SCALARS and isinstance(v, (int, float)) and math.isfinite(v)}
    shared = getattr(optimizer, "shared", optimizer)
    if shared is not None and getattr(shared, "param_groups", None):
        out["lr"] = float(shared.param_groups[0]["lr"])
    return out


def hparams(config):
    """A run's options as flat ``name -> number, string or bool`` (component options as
    ``prior_options.num_components``; lists as ``200,200``; None as an empty string)."""
    flat = {}
    for key, value in (config.to_dict() if hasattr(config, "to_dict") else dict(config)).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            if isinstance(v, (list, tuple)):
                v = ",".join(map(str, v))
            flat[name] = "" if v is None else v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def final_results(evaluation_report, state, training_seconds=None):
    """The numbers logged at the end: ``test/...`` from the evaluation report (when there is one),
    ``best_valid_elbo``, ``best_epoch``, ``epochs`` and ``training_seconds``."""
    out = {"best_valid_elbo": state.best_valid_elbo, "best_epoch": state.best_epoch, "epochs": state.epoch}
    if training_seconds is not None:
        out["training_seconds"] = training_seconds
    for key in FINAL if evaluation_report else ():
        value = evaluation_report.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"test/{key}"] = value
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


class Logger(Callback):
    """Base of the loggers; subclasses implement :meth:`check`, :meth:`open`,
    :meth:`log_scalars`, :meth:`log_images`, :meth:`log_final` and :meth:`close`.

    :param str run_dir: the run directory (TensorBoard writes its event files there).
    :param config: the run's :class:`~pyrovae.config.TrainConfig` (its options are logged), or None.
    :param images: ``images(model, guide) -> {name: 2-D array in [0, 1]}``, or None for no images.
    :param int images_every: epochs between images; 0 never.
    """

    def __init__(self, run_dir, config=None, images=None, images_every=10):
        self.run_dir, self.config, self.images, self.images_every = run_dir, config, images, images_every
        self.opened = False

    def check(self):
        """Before training (and before the run directory is written): raise
        :class:`~pyrovae.errors.ConfigError` if the library is missing, or
        :class:`~pyrovae.errors.StorageError` if the store cannot be written."""

    def open(self, epoch):
        """Start (or, with ``epoch`` > 0, continue after a resume at that epoch) the logged run."""

    def log_scalars(self, values, step):
        """``values``: name -> float, at ``step`` (the epoch)."""

    def log_images(self, images, step):
        """``images``: name -> 2-D float array in [0, 1], at ``step`` (the epoch)."""

    def log_final(self, hparams, results):
        """Once, at the end: the options (:func:`hparams`) beside the results (:func:`final_results`)."""

    def close(self):
        """Flush and release the store; idempotent."""

    def on_fit_start(self, loop):
        if loop.context.is_main and not self.opened:
            self.check()
            self.open(loop.state.epoch)
            self.opened = True

    def on_epoch_end(self, loop):
        if not loop.context.is_main:
            return
        epoch = loop.state.epoch
        self.log_scalars(scalars(loop.record, loop.optimizer), epoch)
        if self.images is not None and self.images_every and epoch % self.images_every == 0:
            self.log_images(self.images(loop.model, loop.guide), epoch)


from pyrovae.loggers.mlflow import MLflowLogger  # noqa: E402 (they subclass Logger)
from pyrovae.loggers.tensorboard import TensorBoardLogger  # noqa: E402

LOGGERS = Registry("logger", "pyrovae.loggers", {
    "tensorboard": TensorBoardLogger,  # torch.utils.tensorboard event files in the run directory
    "mlflow": MLflowLogger,  # an MLflow run in a tracking store (a local file store by default)
})
