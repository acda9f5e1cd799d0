"""Load a saved run: its configuration, data, model and guide at a checkpoint."""

import os
from typing import NamedTuple

import torch

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data import load_dataset
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.models import LIKELIHOODS
from pyrovae.registry import lookup
from pyrovae.runs.checkpoint import describe_mismatch, load_checkpoint
from pyrovae.runs.rundir import BEST, CONFIG, LAST

__all__ = ["LoadedRun", "load_run"]


class LoadedRun(NamedTuple):
    config: TrainConfig
    model: torch.nn.Module  #: in eval mode
    guide: torch.nn.Module  #: in eval mode
    state: dict  #: the checkpoint
    data: object  #: the run's :class:`~pyrovae.data.Dataset`


def load_run(run_dir, checkpoint="best", device="cpu", data=None):
    """Rebuild a run from ``config.json`` and ``best.pt`` or ``last.pt``.

    :param data: an already loaded dataset (skips reloading).
    :raises CheckpointError: if the directory, its config or its checkpoint is missing,
        corrupted, or does not fit the config.
    :raises DataError: if the run's data can no longer be read.
    """
    if not os.path.isfile(os.path.join(run_dir, CONFIG)):
        raise CheckpointError(f"{run_dir} is not a pyrovae run directory (no {CONFIG})")
    names = {"best": BEST, "last": LAST}
    if checkpoint not in names:
        raise ConfigError(f"--checkpoint must be best or last, got {checkpoint!r}")
    config = TrainConfig.load(os.path.join(run_dir, CONFIG))
    state = load_checkpoint(os.path.join(run_dir, names[checkpoint]), map_location=device)
    if data is None:
        binary = lookup(LIKELIHOODS, config.likelihood, "likelihood").binary
        data = load_dataset(config.data, config.data_dir, binary=binary, split_seed=config.split_seed)
    model, guide = build_model_and_guide(config, data.num_pixels, len(data.train), data.image_shape)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"the checkpoint in {run_dir} does not fit its {CONFIG}: "
                              f"{describe_mismatch(err)}") from None
    model.to(device).eval()
    guide.to(device).eval()
    return LoadedRun(config, model, guide, state, data)
