"""The training loop as a library: :func:`fit` over any model, guide, objective and data, with
the state, step and callbacks it is made of. ``pyrovae.runs.train.train`` is a pipeline over it."""

from pyrovae.training.callbacks import (
           Callback,
           EarlyStopping,
           GracefulStopping,
           MetricsLog,
           ProgressBar,
)
from pyrovae.training.checkpointing import Checkpointer
from pyrovae.training.loop import Loop, fit
from pyrovae.training.state import TrainState
from pyrovae.training.step import Step, as_objective
from pyrovae.training.validation import validation_elbo

__all__ = ["fit", "Loop", "TrainState", "Step", "as_objective", "Callback", "Checkpointer", "MetricsLog",
           "EarlyStopping", "ProgressBar", "GracefulStopping", "validation_elbo"]
