"""The training state: where a run is, everything the loop needs to continue it exactly."""

import math
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Counters and positions of a training run, saved in every checkpoint.

    ``epoch`` counts completed epochs. Inside an interrupted epoch, ``batch`` is the number of
    minibatches already done, ``epoch_data_rng`` the data-order generator's state at the
    epoch's start (the epoch is replayed to ``batch`` on resume) and ``partial_total`` the
    epoch's loss so far (nats per datapoint, summed over those batches); all three are reset at
    an epoch's end. The RNG states of torch, NumPy and Python travel beside it in the checkpoint
    (:func:`pyrovae.runs.checkpoint.get_rng_state`).
    """

    epoch: int = 0
    step: int = 0
    best_valid_elbo: float = -math.inf  #: nats per datapoint
    best_epoch: int = 0
    since_best: int = 0  #: epochs since the best validation ELBO
    batch: int = 0
    epoch_data_rng: torch.Tensor = field(default_factory=lambda: torch.Generator().get_state())
    partial_total: float = 0.0

    def to_checkpoint(self):
        """The fields as checkpoint keys (plain numbers and one tensor)."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, state):
        """:raises KeyError: if a field is missing from ``state``."""
        return cls(**{name: state[name] for name in cls.__dataclass_fields__})

    def improve(self, score):
        """Record the end of an epoch with validation ELBO ``score``; True if it is the best so far."""
        if score > self.best_valid_elbo:
            self.best_valid_elbo, self.best_epoch, self.since_best = score, self.epoch, 0
            return True
        self.since_best += 1
        return False
