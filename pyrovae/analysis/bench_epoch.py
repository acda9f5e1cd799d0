"""The small-data group of ``pyrovae bench``: whole training epochs on the bundled digits.

Small data is where fixed costs show: an epoch of digits (1,438 training images of 8 x 8 pixels,
64-200-200-50 tanh VAE, batch 100, so 15 steps) takes tens of milliseconds, and the validation
pass and the checkpoint are a large share of it. The rows:

* **reference**: a hand-written PyTorch loop (:class:`~pyrovae.analysis.reference.ReferenceVAE`,
  ``torch.optim.Adam``) that each epoch takes its 15 steps, computes the validation ELBO, and
  saves its state (model, optimizer, epoch) with ``torch.save`` to a temporary file renamed over
  the last one: the loop a careful researcher writes.
* **pyrovae train** rows: :func:`~pyrovae.runs.train.train` itself, as ``pyrovae train --data
  digits`` runs it (validation ELBO every epoch, metrics log, ``last.pt`` and ``best.pt`` written
  atomically and flushed to disk, early stopping, signal handling), with the default options and
  with ``--checkpoint-every 10`` and ``--jit off``.

An epoch's time runs from the end of the previous epoch's callbacks to the end of its own, so it
holds everything a run does per epoch. The first epoch of every run (compilation, first-call
allocations) is left out; a row's time is the median over the later epochs. Each of ``repeats``
rounds runs every row in turn for ``epochs`` epochs, and a row's ratio is the median over rounds
of its time over the reference's in the same round.
"""

import os
import statistics
import tempfile
import time

import torch

from pyrovae.analysis.reference import ReferenceVAE
from pyrovae.analysis.timing import median_ratios, synchronize
from pyrovae.config import TrainConfig
from pyrovae.data import batches, load_dataset
from pyrovae.runs.train import train
from pyrovae.training.callbacks import Callback

__all__ = ["EPOCH_ROWS", "time_digits_epochs"]

BATCH = 100

# label -> options of `pyrovae train` (TrainConfig keywords) beside data="digits"
EPOCH_ROWS = {
    "pyrovae train (defaults: every epoch validated and checkpointed)": {},
    "pyrovae train --checkpoint-every 10": dict(checkpoint_every=10),
    "pyrovae train --jit off": dict(jit="off"),
}


class _EpochClock(Callback):
    """Times between consecutive epoch ends (run last, so each holds the whole epoch)."""

    def __init__(self, device):
        self.device, self.ends = device, []

    def on_epoch_end(self, loop=None):
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def epoch_seconds(self):
        return [b - a for a, b in zip(self.ends, self.ends[1:])]


def _pyrovae_epochs(options, epochs, device, folder, seed):
    clock = _EpochClock(device)
    config = TrainConfig(data="digits", epochs=epochs, eval_num_samples=0, seed=seed, device=str(device), **options)
    with open(os.devnull, "w") as quiet:
        train(config, os.path.join(folder, f"run-{len(os.listdir(folder))}"), progress=False, log=quiet,
              callbacks=[clock])
    return clock.epoch_seconds()


def _reference_epochs(data, epochs, device, folder, seed):
    """The hand-written loop; the seconds of its epochs after the first."""
    torch.manual_seed(seed)
    vae = ReferenceVAE(num_pixels=data.num_pixels).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    valid = data.valid.x.to(device)
    path = os.path.join(folder, "reference.pt")
    clock = _EpochClock(device)
    for epoch in range(epochs):
        vae.train()
        for x, _ in batches(data.train, BATCH, generator):
            optimizer.zero_grad(set_to_none=True)
            vae(x.to(device), len(data.train)).backward()
            optimizer.step()
        vae.eval()
        with torch.no_grad():
            valid_elbo = -vae(valid).item() / len(valid)
        torch.save({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "valid_elbo": valid_elbo}, path + ".tmp")
        os.replace(path + ".tmp", path)
        clock.on_epoch_end()
    return clock.epoch_seconds()


def time_digits_epochs(epochs=8, repeats=5, device="cpu", rows=None, folder=None):
    """Seconds per digits epoch of each row and its ratio to the hand-written loop.

    :param int epochs: epochs per run (at least 2; the first is not timed).
    :param int repeats: rounds; every row runs once per round.
    :param str device: cpu or cuda (the runs' ``--device``).
    :param rows: labels of :data:`EPOCH_ROWS` to time (default all).
    :param str folder: where the runs are written (default a temporary folder, removed after).
    :returns: a list of row dicts: ``row``, ``seconds_median`` (s per epoch), ``ratio``.
    :raises ValueError: for fewer than 2 epochs.
    """
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 (the first is not timed), got {epochs}")
    device = torch.device(device)
    data = load_dataset("digits")
    chosen = {label: options for label, options in EPOCH_ROWS.items() if rows is None or label in rows}
    times = {"reference: hand-written loop (steps, validation ELBO, torch.save + rename)": []}
    times.update({label: [] for label in chosen})
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for r in range(repeats):
            for label in times:
                if label.startswith("reference"):
                    seconds = _reference_epochs(data, epochs, device, tmp, seed=r)
                else:
                    seconds = _pyrovae_epochs(chosen[label], epochs, device, tmp, seed=r)
                times[label].append(statistics.median(seconds))
    return median_ratios(times)
